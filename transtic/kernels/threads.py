"""Spreading one kernel call over PyTorch's intra-op thread count.

A kernel built with OpenMP splits a range of independent work items over threads
itself (one call); one built without runs each part in a call of its own on a shared
thread pool (ctypes releases the GIL). Either way every work item is computed by one
thread, in one fixed order, so results do not depend on the number of threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None or _pool._max_workers < workers:  # noqa: SLF001
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kernel")
        return _pool


def run_split(
    call: Callable[[int, int, int], int], begin: int, end: int, *, openmp: bool
) -> list[int]:
    """``call(first, last, threads)`` over [begin, end) on torch.get_num_threads() threads;
    the return codes of every call."""
    workers = max(1, min(torch.get_num_threads(), end - begin))
    if openmp:
        return [call(begin, end, workers)]
    bounds = [begin + (end - begin) * i // workers for i in range(workers + 1)]
    pool = _executor(workers)
    pending = [pool.submit(call, bounds[i], bounds[i + 1], 1) for i in range(1, workers)]
    return [call(bounds[0], bounds[1], 1)] + [p.result() for p in pending]
