#!/usr/bin/env bash
# The standing GPU measurements, as ONE device call (tools/device: `run` with carry [".whl"]):
#   bash bench/gpu_session.sh
# .whl/ holds the cp312 wheels the device image lacks (bench/README.md, "GPU session"). Each step has its own
# timeout so that a slow torch.compile cannot starve the others; the results land in $OUT (4 files).
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, platform; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'python', platform.python_version())"
    lscpu | grep -m1 'Model name'; nproc
} >"$OUT/hardware.txt" 2>&1
cat "$OUT/hardware.txt"
T="python3 bench/train_throughput.py --preset paper --device cuda --steps ${STEPS:-10} --warmup 3 --threads 16"
# 1. eager, fp32 and bf16, train and infer, batch 64-512 (each case in a fresh process: its own peak memory)
for bs in 64 128 256 512; do
    timeout 120 $T --batch-size $bs 2>>"$OUT/log.txt" | tail -1 >>"$OUT/train_throughput.jsonl"
    echo "eager batch $bs done $(date +%T)"
done
# 2. screener predict, end to end (CLI) and by stage, on real MP-20 crystals repeated to ~5,000
timeout 150 python3 bench/predict_throughput.py --repeat 36 --device cuda --n-jobs 16 \
    --batch-sizes 64 256 1024 4096 --cli-batch-size 1024 2>>"$OUT/log.txt" | tail -1 >"$OUT/predict_throughput.json"
echo "predict done $(date +%T)"
# 3. torch.compile(dynamic=True), batch 256 then 512 (compilation is per process, so timed apart as warmup_s)
for bs in 256 512; do
    timeout ${COMPILE_TIMEOUT:-130} $T --batch-size $bs --compile 2>>"$OUT/log.txt" | tail -1 >>"$OUT/train_throughput.jsonl"
    echo "compile batch $bs done $(date +%T)"
done
tail -5 "$OUT/log.txt"
