"""Keep freed tensor memory inside the process, so the next frame reuses it.

glibc's malloc serves every block above a threshold (at most 32 MiB) with a fresh
``mmap`` and returns it to the kernel on ``free``. The codec's intermediate tensors are
tens to hundreds of MiB, so every operator of every frame gets new pages, and the
kernel faults in and zeroes each 4 KiB page again. On the 2-core KVM build machine a
paper-size Swin stage at 1/2 resolution took 467k page faults per call and spent a
third of its CPU time in the kernel; with freed memory kept in the heap, 0 faults and
42 % less CPU time (docs/performance.md).

:func:`retain_freed_memory` turns glibc's ``mmap`` path off (``M_MMAP_MAX = 0``) and
raises the trim threshold, so freed blocks stay in the heap for reuse. It also makes
every thread allocate from the main heap (``M_ARENA_MAX = 1``): a thread's own arena
is built of heaps of at most 64 MiB, so the large tensors of a codec running in a
worker thread (every request of the services) were mapped and unmapped per frame
anyway: 49k page faults and ~8 % more time for a 640x480 frame than on the main
thread, and none after. Threads that already hold an arena keep it, so the services
call this at start, before their servers' threads exist.

The price: the process keeps its peak working set instead of shrinking after a frame.
It is process-wide, so :class:`transtic.codec.ImageCodec` calls it only when asked to
(``retain_memory=True``, the default); other C libraries (musl, macOS, Windows) are
left alone.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading

log = logging.getLogger(__name__)

# <malloc.h> parameter numbers (glibc)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
# mallopt takes a C int: keep up to 2 GiB of free heap before giving any back
RETAINED_BYTES = 2**31 - 1

_lock = threading.Lock()
_state: dict[str, bool] = {}


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None  # not glibc (e.g. musl): its allocator has other knobs
    version.restype = ctypes.c_char_p
    return libc


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (process-wide, idempotent).

    Returns True when the allocator now retains freed memory, False where this C
    library offers no such setting.
    """
    with _lock:
        if "retained" not in _state:
            libc = _glibc()
            tuned = False
            if libc is not None:
                tuned = all(
                    libc.mallopt(option, value)
                    for option, value in (
                        (M_MMAP_MAX, 0),
                        (M_TRIM_THRESHOLD, RETAINED_BYTES),
                        (M_ARENA_MAX, 1),
                    )
                )
                log.info("glibc malloc keeps freed memory for reuse: %s", tuned)
            _state["retained"] = tuned
        return _state["retained"]
