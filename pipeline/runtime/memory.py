"""Giving freed memory back to the system: glibc's `malloc_trim`, fenced here (a no-op without glibc).

CPython frees objects to its own small-object arenas and to the C allocator; glibc keeps freed pages inside
its heaps unless they sit at the top of one, so after a burst (a flood of new series, a backlog drained)
the process keeps its peak RSS long after the objects are gone. `malloc_trim(0)` returns every free page
of every heap (madvise), which is what this module offers, rate-limited: it walks all heaps, a few
milliseconds for a few hundred MB, holding each heap's lock meanwhile.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time

log = logging.getLogger(__name__)
MIN_EVERY_S = 1.0  # trims come at most this often, however many releases ask
RELEASED_FROM = 500  # a sweep that released this many series (or sensors) asks for a trim
SETTLE_S = 2.0  # ... which runs this long after the last such release: the owners sweep one after another


def _load():
    """glibc's malloc_trim, or None (musl, macOS, Windows: their allocators return memory themselves or not at all)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


_malloc_trim = _load()
_lock = threading.Lock()
_last = -float("inf")


def available() -> bool:
    """True where the allocator can be asked to return free pages (glibc)."""
    return _malloc_trim is not None


def trim(reason: str = "", clock=time.monotonic, force: bool = False) -> bool:
    """Return the allocator's free pages to the system, unless one was done in the last MIN_EVERY_S (or the
    platform has no malloc_trim); True if it ran. Called after large releases of state."""
    global _last
    if _malloc_trim is None:
        return False
    now = clock()
    with _lock:
        if not force and now - _last < MIN_EVERY_S:
            return False
        _last = now
    started = time.perf_counter()
    _malloc_trim(0)
    log.debug("event=memory_trimmed reason=%s took_ms=%.1f", reason or "-", (time.perf_counter() - started) * 1000)
    return True


_timer: threading.Timer | None = None


def released(count: int, owner: str) -> None:
    """An owner released `count` series of state: from RELEASED_FROM on, a trim runs SETTLE_S after the last
    such release (in a timer thread; the owners' sweeps come within seconds of each other)."""
    global _timer
    if count < RELEASED_FROM or _malloc_trim is None:
        return
    with _lock:
        if _timer is not None:
            _timer.cancel()
        _timer = threading.Timer(SETTLE_S, trim, kwargs={"reason": f"released_{owner}", "force": True})
        _timer.daemon = True
        _timer.start()
