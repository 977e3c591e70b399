"""The operating system's name of the current thread: what `top -H`, `ps -L` and /proc/<pid>/task/*/comm
show, so an operator (and the benchmark) can tell which of the daemon's threads spends the CPU.

Python names its threads only for itself (3.11 does not pass the name to the kernel). Linux takes a name
of at most 15 bytes through prctl(PR_SET_NAME); elsewhere, or if libc cannot be loaded, nothing happens.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

PR_SET_NAME = 15
_libc = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        _libc = None


def name_os_thread(name: str) -> None:
    """Give the calling thread `name` (cut to 15 bytes) in the kernel's thread list."""
    if _libc is not None:
        _libc.prctl(PR_SET_NAME, name.encode("ascii", "replace")[:15], 0, 0, 0)
