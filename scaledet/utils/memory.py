"""Keep freed heap memory in the process, so a training loop stops re-faulting its activations.

glibc's malloc serves large requests (above a threshold that adapts up to 32 MiB) with fresh
``mmap`` regions and unmaps them on ``free``. A CPU training step allocates and frees gigabytes
of such buffers, so every step the kernel maps, zero-fills and faults them in again: for
``retinanet_resnet50_fpn`` at 640, batch 2, about 410,000 minor page faults (1.6 GiB) and
0.8-1.8 s of system time per step of about 14 s (one thread; ``benchmarks/bench_retinanet_vs_torchvision.py
--malloc``). With ``M_MMAP_MAX = 0`` and the largest trim threshold, malloc serves them from its
heap and keeps freed memory for the next step: the faults drop to none. The cost is that the
process's resident memory stays at its high-water mark instead of shrinking between steps.

jemalloc or tcmalloc preloaded with ``LD_PRELOAD`` achieve the same for a whole process; this
needs nothing installed. It is a process-wide setting, so the library never makes it on import:
the trainer does (``train.retain_freed_memory``), and anyone else may call it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_MAX = -4
_LARGEST_INT = 2 ** 31 - 1


def retain_freed_memory() -> bool:
    """Ask glibc malloc to keep freed memory (see the module doc); False where it cannot
    (not Linux/glibc, e.g. musl or macOS), which changes nothing else."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, _LARGEST_INT) == 1
