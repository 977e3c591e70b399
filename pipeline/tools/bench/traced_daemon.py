"""The daemon under tracemalloc, for the flood benchmark: `realtime_pipeline.py` with its arguments, plus
SIGUSR2 writing a snapshot of what is allocated now: the first to $PIPELINE_TRACEMALLOC_OUT with the suffix
`.base` (sent before the load: what the load adds is measured from it), the second to that path, the next
with the suffix `.2`, `.3` ...; and one with the suffix `.highest` each time the traced memory passes its
highest by a quarter."""
from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
import time
import tracemalloc

from .configtree import ROOT


def snapshot(path: str) -> None:
    """A snapshot written whole or not at all: under load a dump takes seconds, and the daemon may be stopped
    meanwhile (a half-written one failed to load)."""
    tracemalloc.take_snapshot().dump(path + ".tmp")
    os.replace(path + ".tmp", path)


def main() -> None:
    out = os.environ["PIPELINE_TRACEMALLOC_OUT"]
    tracemalloc.start(int(os.environ.get("PIPELINE_TRACEMALLOC_FRAMES", "1")))

    taken = [0]

    def dump(_signum, _frame) -> None:
        path = (os.path.splitext(out)[0] + ".base" if not taken[0] else out if taken[0] == 1
                else f"{os.path.splitext(out)[0]}.{taken[0]}")
        taken[0] += 1
        current, peak = tracemalloc.get_traced_memory()
        with open(path + ".peak", "w") as f:  # the highest traced since the last snapshot: transient memory
            f.write(f"{current} {peak}\n")
        tracemalloc.reset_peak()
        threading.Thread(target=lambda: snapshot(path), daemon=True).start()

    def watch() -> None:  # after the base: a snapshot each time the traced memory passes its highest by a quarter
        highest = 0
        while True:
            time.sleep(0.2)
            current = tracemalloc.get_traced_memory()[0]
            if taken[0] and current > 1.25 * max(highest, 32 << 20):
                highest = current
                snapshot(os.path.splitext(out)[0] + ".highest")

    signal.signal(signal.SIGUSR2, dump)
    threading.Thread(target=watch, daemon=True).start()
    sys.argv = [str(ROOT / "realtime_pipeline.py"), *sys.argv[1:]]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
