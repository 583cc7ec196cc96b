"""Keep freed host memory in the process, so XLA:CPU steps do not page-fault their temporaries.

XLA:CPU allocates the temporaries of every executed step afresh (hundreds of MB for a training
step) and frees them at the end. With glibc's defaults every block over 32 MB, and every large
block requested from a worker thread's arena, is a fresh `mmap`: the kernel hands out zeroed 4 KiB
pages one fault at a time, and `munmap` returns them after the step. Measured on a 2-core AMD EPYC
for the small CIFAR-shaped ViT (Ti/4, depth 4, batch 128, float32 training): ~173,000 page
faults per step, ~20% of the step in the kernel, and elementwise fusions 4-5x slower than on
warm memory (docs/performance.md).

`keep_freed_memory()` sets three glibc `mallopt` parameters: one arena for all threads
(`M_ARENA_MAX`), no `mmap` for large blocks (`M_MMAP_MAX`), and no returning of the heap's top to
the OS (`M_TRIM_THRESHOLD`). Large blocks then come from the heap and are reused from step to step;
the process keeps its peak footprint, which a training process reaches anyway. The CLIs call it
first thing; `VIT_JAX_KEEP_FREED_MEMORY=0` turns it off. It does nothing outside glibc, and after
JAX has started computing threads it helps less (those threads already have their own arenas), so
call it before the first JAX computation.
"""

import ctypes
import ctypes.util
import os
import platform

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # <malloc.h>
_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
_applied = None


def keep_freed_memory() -> bool:
    """Applies the glibc malloc settings once per process; True when they are in effect."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("VIT_JAX_KEEP_FREED_MEMORY", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    _applied = all(libc.mallopt(param, value) == 1 for param, value in _SETTINGS)
    return _applied
