"""Log counts per window: which windows are due for counting, and the rows one window's counts become.

Pure logic; pipeline/operators/logcounts/runner.py runs it against the `logs` table. Windows are tumbling,
aligned to multiples of `window_s` since the epoch (UTC), on the records' event time. A window is
counted once it is `grace_s` past its end, and again whenever records for it arrive after that.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

from ...stages.logs import LEVELS
from ...records import APP_SENSOR_TYPE  # noqa: F401 - reserved, defined below every layer

# The sensor type of log counts. An app that stops logging is quiet, not offline: no offline alerts for it.


def sensor_id(app: str) -> str:
    """The sensor id under which an app's log counts are stored."""
    return f"app:{app}"


def metric(level: str) -> str:
    """The metric name of a level's count: ERROR -> log_error."""
    return f"log_{level.lower()}"


class CountWindows:
    """Tracks the windows to count: each once it closes, plus closed ones that got late records."""

    def __init__(self, window_s: float, grace_s: float, active_s: float, max_lookback_windows: int = 200):
        self.window_s = window_s
        self.grace_s = grace_s
        self.active_s = active_s
        self.max_lookback_windows = max_lookback_windows
        self.next_close: float | None = None  # start of the oldest window not yet counted
        self.dirty: set[float] = set()
        self.last_seen: dict[str, float] = {}  # app -> newest event time seen
        # app -> oldest event time seen: no zero rows for windows before an app's first record (a new app
        # would otherwise get `active_s` of made-up zeros, all counted at once).
        self.first_seen: dict[str, float] = {}

    def window_of(self, ts: float) -> float:
        return math.floor(ts / self.window_s) * self.window_s

    def begin(self, now: float, seen: Mapping[str, tuple[float, float]]) -> None:
        """At start: count again the windows of the last `active_s` (bounded), so a window open at a crash
        or closed while the daemon was down is counted too; `seen` (app -> oldest and newest event time)
        comes from the stored logs."""
        lookback = min(self.active_s, self.max_lookback_windows * self.window_s)
        self.next_close = self.window_of(now - lookback)
        for app, (first, last) in seen.items():
            self._seen(app, first)
            self._seen(app, last)

    def mark(self, app: str, ts: float) -> None:
        """A record of `app` at event time `ts` is durable."""
        self._seen(app, ts)
        start = self.window_of(ts)
        if self.next_close is not None and start < self.next_close:
            self.dirty.add(start)  # already counted: count again with this record

    def _seen(self, app: str, ts: float) -> None:
        if ts > self.last_seen.get(app, -math.inf):
            self.last_seen[app] = ts
        if ts < self.first_seen.get(app, math.inf):
            self.first_seen[app] = ts

    def due(self, now: float) -> list[float]:
        """Starts of the windows to count now, oldest first."""
        if self.next_close is None:
            return []
        closed_before = now - self.grace_s
        out = set()
        while self.next_close + self.window_s <= closed_before:
            out.add(self.next_close)
            self.next_close += self.window_s
        out |= self.dirty
        self.dirty.clear()
        horizon = now - self.active_s - self.window_s
        for app in [a for a, ts in self.last_seen.items() if ts < horizon]:
            del self.last_seen[app]
            del self.first_seen[app]
        return sorted(out)

    def active(self, start: float) -> list[str]:
        """Apps that get a row (zero if nothing was logged) for the window starting at `start`: those that
        had logged before its end and are still logging within `active_s` of it."""
        end = start + self.window_s
        since = end - self.active_s
        first = self.first_seen
        return sorted(app for app, ts in self.last_seen.items() if ts >= since and first[app] < end)


def count_rows(counts: Mapping[tuple[str, str], int], apps: Iterable[str]) -> dict[tuple[str, str], float]:
    """One window's measurements: (sensor_id, metric) -> count, for every level of every app that logged
    in it or is active. Zeros are written so an error-rate alert sees the rate fall back and resolves."""
    names = set(apps) | {app for app, _ in counts}
    return {(sensor_id(app), metric(level)): float(counts.get((app, level), 0)) for app in sorted(names) for level in LEVELS}


def changes(rows: Mapping[tuple[str, str], float], stored: Mapping[tuple[str, str], float]
            ) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], float]]:
    """Split a window's rows into new ones and corrections of stored ones; rows stored unchanged are dropped."""
    new = {k: v for k, v in rows.items() if k not in stored}
    corrected = {k: v for k, v in rows.items() if k in stored and stored[k] != v}
    return new, corrected
