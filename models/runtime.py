"""Process-level tuning for CPU inference, and the interface of the ONNX Runtime sessions that run it.

glibc's malloc returns large freed blocks to the kernel (``mmap``/``trim``), so every batched forward pass page-faults
its activations in again (about 2.3 GB per batch-32 forward measured here). Keeping freed memory in the heap, the
effect of ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``, removes those faults; ``tune_malloc`` applies it
from inside the process with ``mallopt``. It changes no numbers. Entry points (CLI, web app) call it; libraries don't.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_done = False


class OnnxSession(Protocol):
    """What AffectLab calls on an ``onnxruntime.InferenceSession`` (onnxruntime ships no type information)."""

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The named outputs (all of them for None) of one run on the given inputs."""
        ...


def tune_malloc(enabled: bool = True) -> bool:
    """Keeps freed memory in glibc's heap (no mmap for large blocks, no trimming). Idempotent.

    Args:
        enabled: The entry point's setting (``Settings.malloc_tune``; ``AFFECTLAB_MALLOC_TUNE=0`` turns it off).

    Returns:
        True when the settings were applied (glibc found), else False.
    """
    global _done
    if _done:
        return True
    if not enabled:
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    _done = ok
    return ok


def cpu_workers() -> int:
    """Cores this process may use (its CPU affinity), at least 1: how many single-threaded workers to run at once.

    ``AFFECTLAB_CPU_WORKERS`` overrides it (set by ``affectlab analyze --workers N`` in each worker: its share).
    """
    import os

    from core.settings import cpu_workers_override

    override = cpu_workers_override()
    if override is not None:
        return override
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
