"""Keep freed memory in the process: glibc's allocator settings for CPU training and inference.

PyTorch's CPU tensors come from malloc. By default glibc serves a large request with a fresh mmap and
hands the pages back to the kernel when the tensor is freed, so every feature map of every forward
pass is page-faulted (and zeroed by the kernel) again, which made small convolutions several times
slower (docs/design-choices.md has the measurement). Raising glibc's mmap and trim thresholds keeps
freed memory in the heap, as jemalloc or tcmalloc would. The cost: the process keeps its peak heap instead of shrinking after it.

Set by the ``archsearch`` command and the benchmarks, not on import: a library should not change a
host process's allocator behind its back.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc refuses an mmap threshold above half its largest heap (32 MiB on 64-bit systems); tensors
# larger than this still come from mmap, which at that size costs little next to the work on them.
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 1 << 30


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed tensors' memory for reuse; False where there is no glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): nothing to set
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


_GLIBC_DEFAULT_THRESHOLD = 128 << 10


def return_freed_memory(_worker_id: int = 0) -> bool:
    """Undo :func:`keep_freed_memory` in this process (glibc's default thresholds): for DataLoader
    workers (``worker_init_fn``), which inherit the setting when forked but only decode images, and
    whose every kept arena would count against the run's memory."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD))
