"""Tests of screener.cgat.perf: the allocator switch works on glibc and leaves results unchanged."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is a glibc function")
def test_configure_cpu_allocator_in_a_fresh_process():
    # a child process, so the test session's allocator stays as it was
    code = (
        "import torch; from screener.cgat.perf import configure_cpu_allocator as c; ok = c(); "
        "x = torch.ones(4096, 4096); y = (x * 2).sum(); del x; print(ok, float(y))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    ok, total = out.stdout.split()
    assert ok == "True"
    assert float(total) == 2.0 * 4096 * 4096
