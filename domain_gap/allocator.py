"""Keep the forward pass's freed blocks in the heap for the next batch (glibc malloc settings).

glibc serves each block above its mmap threshold (128 kB, rising at most to 32 MB) with a
fresh ``mmap`` and hands it back to the kernel on ``free``. A forward pass of a batch frees
and re-allocates its activations (8 x 256 x 512 images: ~1 GB), so every batch faulted them
in again page by page: ~35k page faults an image on the demo, about 40% of the forward's CPU
time spent in the kernel zeroing pages. With the mmap and trim thresholds raised, freed blocks
stay in the heap and the next batch reuses them: the bare forward ran 1.5x faster and the
extraction 1.4x (``benchmarks/bench_allocator.py``). PyTorch's CPU tuning guide makes the same
point with jemalloc or tcmalloc preloaded; this needs nothing installed.

The cost: the process keeps the peak of its heap instead of returning it between batches
(the peak itself does not grow). Process-wide and idempotent; elsewhere than glibc it does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_blocks"]

MMAP_THRESHOLD = 1 << 30
"""Blocks below 1 GB come from the heap (the largest activation of a batch of 8 is ~80 MB)."""
TRIM_THRESHOLD = 2**31 - 1
"""Free memory at the heap's top goes back to the kernel only beyond 2 GB (mallopt takes an int)."""

_M_TRIM_THRESHOLD = -1  # mallopt's parameter numbers, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3


@functools.cache
def keep_freed_blocks() -> bool:
    """Set glibc's mmap and trim thresholds (once per process); True when glibc took both."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # no C library by that name, or not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
