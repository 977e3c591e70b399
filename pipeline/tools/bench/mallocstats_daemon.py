"""The daemon with allocator statistics on demand, for the flood benchmark (`flood.py --mallocstats`):
`realtime_pipeline.py` with its arguments, plus SIGUSR2 appending to $PIPELINE_MALLOCSTATS_OUT a summary of
pymalloc's arenas (`sys._debugmallocstats`) and of the process's memory (/proc/self/smaps_rollup).

Why: tracemalloc counts live Python objects; after a flood is released they are a few MB, while RSS stays tens
of MB higher. What holds the rest is the allocators' - pymalloc arenas (1 MiB, returned only when wholly empty)
kept by a few live objects, or glibc heap pages - and these statistics tell the two apart, at a cost of
nothing until the signal comes.
"""
from __future__ import annotations

import os
import runpy
import signal
import sys
import tempfile
import threading

from .configtree import ROOT

KEPT = ("# arenas allocated current", "# arenas reclaimed", "# arenas highwater mark", "# bytes in allocated blocks",
        "# bytes in available blocks", "# unused pools", "# bytes lost to pool headers", "# bytes lost to quantization",
        "Total")


def pymalloc_summary() -> dict[str, str]:
    """sys._debugmallocstats' totals (it writes to the C stderr: redirected to a file for the call)."""
    with tempfile.TemporaryFile("w+") as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read()
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition("=")
        if name.strip() in KEPT:
            out[name.strip()] = value.strip()
    return out


def rollup() -> dict[str, str]:
    """Rss, Anonymous ... of the whole process, in kB (Linux)."""
    try:
        lines = open("/proc/self/smaps_rollup").read().splitlines()[1:]
    except OSError:
        return {}
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines) if k in ("Rss", "Anonymous")}


def main() -> None:
    out = os.environ["PIPELINE_MALLOCSTATS_OUT"]
    taken = [0]

    def dump() -> None:
        taken[0] += 1
        stats = {"n": taken[0], **rollup(), **pymalloc_summary()}
        with open(out, "a") as f:
            f.write(repr(stats) + "\n")

    # In a thread: a signal handler runs between bytecodes of the main thread, which may wait on a lock.
    signal.signal(signal.SIGUSR2, lambda _s, _f: threading.Thread(target=dump, daemon=True).start())
    sys.argv = [str(ROOT / "realtime_pipeline.py"), *sys.argv[1:]]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
