"""CPU performance switches for training and inference processes (explicit calls, never at import time)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

__all__ = ["configure_cpu_allocator"]

logger = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3


def configure_cpu_allocator(keep_bytes: int = 1 << 30) -> bool:
    """Keep freed memory in the process instead of returning every large block to the OS (glibc only).

    CGAT's per-edge activations are tens of MB per tensor. By default glibc serves such blocks with ``mmap`` and
    unmaps them on free, so every training step page-faults (and zero-fills) all of its activations again: on a
    2-core CPU that made elementwise kernels 5-7x slower than their arithmetic. Raising the mmap and trim
    thresholds lets the heap reuse the memory (the same effect as ``MALLOC_MMAP_THRESHOLD_`` /
    ``MALLOC_TRIM_THRESHOLD_`` in the environment). It changes the whole process, so only programs that run the
    model (training, prediction, benchmarks) should call it; memory freed by the model stays mapped (up to the
    peak use) until the process exits.

    Parameters
    ----------
    keep_bytes : int
        Top-of-heap padding kept between steps.

    Returns
    -------
    bool
        True if glibc accepted the settings, False elsewhere (musl, macOS, Windows: nothing is changed).
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    max_int = 2**31 - 1
    ok = all(
        mallopt(param, value)
        for param, value in (
            (_M_MMAP_THRESHOLD, 1 << 30),  # glibc caps this at HEAP_MAX (32 MiB on 64-bit) and ignores larger
            (_M_TRIM_THRESHOLD, max_int),
            (_M_TOP_PAD, min(keep_bytes, max_int)),
        )
    )
    logger.debug("glibc allocator tuned for large reused blocks: %s", ok)
    return ok
