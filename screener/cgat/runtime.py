"""Where and how training runs: device choice, torchrun/DDP detection, RNG state capture, data order, hardware."""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from screener.errors import InvalidInputError

__all__ = [
    "resolve_device",
    "DistEnv",
    "distributed_env",
    "barrier",
    "seed_everything",
    "rng_state",
    "set_rng_state",
    "epoch_order",
    "hardware_description",
]

logger = logging.getLogger(__name__)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``'auto'`` -> cuda when available, else cpu; anything else is passed to :class:`torch.device`."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InvalidInputError(f"unknown device {device!r} ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r} asked for but CUDA is not available")
    return dev


@dataclass(frozen=True)
class DistEnv:
    """Process-group facts: ``enabled`` is True under torchrun (or any launcher setting WORLD_SIZE/LOCAL_RANK)."""

    enabled: bool
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_env(mode: str = "auto", device_type: str = "cpu") -> DistEnv:
    """Detect a torchrun launch and initialise the default process group if needed.

    ``nccl`` is used for CUDA, ``gloo`` otherwise. Nothing happens without ``WORLD_SIZE`` and ``LOCAL_RANK`` in the
    environment or with ``mode='off'``.
    """
    import torch.distributed as dist

    if mode == "off" or "WORLD_SIZE" not in os.environ or "LOCAL_RANK" not in os.environ:
        return DistEnv(enabled=False)
    if not dist.is_available():
        logger.warning("WORLD_SIZE is set but torch.distributed is unavailable: training in one process")
        return DistEnv(enabled=False)
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        logger.info("initialised process group (%s), world size %d", backend, dist.get_world_size())
    return DistEnv(
        enabled=True,
        rank=dist.get_rank(),
        local_rank=int(os.environ["LOCAL_RANK"]),
        world_size=dist.get_world_size(),
    )


def barrier(env: DistEnv) -> None:
    if env.enabled:
        import torch.distributed as dist

        dist.barrier()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """Data order of one epoch: a permutation that depends only on ``(seed, epoch)`` (what makes resume exact)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def hardware_description(device: str | torch.device = "cpu") -> str:
    """CPU model and core count, plus the GPU name when training ran on CUDA."""
    from screener._hardware import cpu_model

    text = f"{cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cuda" and torch.cuda.is_available():
        text += f"; GPU {torch.cuda.get_device_name(dev)}"
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        text += f"; DDP world size {dist.get_world_size()} (per process shown)"
    return text
