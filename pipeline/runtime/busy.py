"""A sink busy for a long time says so (the sink watch, not the `stuck` detector of pipeline/operators/alerts): `event=sink_stuck` once when its current write (or tick) has run for
STUCK_AFTER_S, `event=sink_unstuck` when it ends. A sink whose queue stays full while its thread waits on one
statement for minutes was otherwise silent (bench/RESULTS.md, "New sensors at the steady rate").

The sink's thread marks its work (`Busy`); the daemon's wait loop asks the watch (`BusyWatch`), which only
compares times and returns the lines to log.
"""
from __future__ import annotations

import time
from typing import Callable, Iterable

STUCK_AFTER_S = 30.0  # a write is well under a second; a retry during an outage logs its own lines too


class Busy:
    """What the owning thread is doing and since when (monotonic seconds); None while it waits for work.
    Written by that thread only, read by the watcher: one attribute assignment, no lock needed."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.state: tuple[str, float] | None = None  # (step, since)

    def begin(self, step: str) -> None:
        self.state = (step, self.clock())

    def end(self) -> None:
        self.state = None


class BusyWatch:
    """Turns each sink's Busy state into `sink_stuck` / `sink_unstuck` lines, one of each per busy spell."""

    def __init__(self, after_s: float = STUCK_AFTER_S):
        self.after_s = after_s
        self._stuck: dict[str, tuple[str, float]] = {}  # sink -> the (step, since) reported stuck

    def check(self, states: Iterable[tuple[str, tuple[str, float] | None]], now: float) -> list[str]:
        """(sink name, Busy.state) for every sink -> the log lines due now (key=value)."""
        lines = []
        for name, state in states:
            reported = self._stuck.get(name)
            if reported is not None and state != reported:  # that spell ended (another may have begun)
                del self._stuck[name]
                lines.append(f"event=sink_unstuck sink={name} step={reported[0]} busy_s={now - reported[1]:.1f}")
            if state is not None and name not in self._stuck and now - state[1] >= self.after_s:
                self._stuck[name] = state
                lines.append(f"event=sink_stuck sink={name} step={state[0]} busy_s={now - state[1]:.1f}")
        return lines
