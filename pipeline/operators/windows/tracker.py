"""Tumbling event-time windows: period labels, window math, per-partition watermarks; the running values
shown meanwhile are partials.py's.

Pure logic, no clocks and no IO: the caller passes `now`. Times inside are integer microseconds since the
epoch (UTC), the resolution of PostgreSQL's TIMESTAMP, so a reading falls in the same window here and in
the SQL that computes the window's row.

A window [start, end) of a partition closes when the partition's watermark (highest event time seen
there minus the grace) reaches `end`, or, when the partition has been silent for `idle_close_s`, when the
wall clock minus the grace does.
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import Iterable, NamedTuple

from .keys import PendingKeys


US = 1_000_000
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PERIOD_RE = re.compile(r"([1-9][0-9]{0,5})([smhd])")
_EPOCH = datetime(1970, 1, 1)


def parse_period(label: str) -> int:
    """'10s', '5m', '1h', '1d' -> window length in seconds."""
    m = _PERIOD_RE.fullmatch(label)
    if not m:
        raise ValueError(f"period {label!r}: expected a number and one of s, m, h, d (e.g. 5m)")
    return int(m.group(1)) * _UNITS[m.group(2)]


def to_us(dt: datetime) -> int:
    """Naive UTC datetime (as PostgreSQL returns TIMESTAMP) -> epoch microseconds."""
    return (dt - _EPOCH) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    """Epoch microseconds -> naive UTC datetime."""
    return _EPOCH + timedelta(microseconds=us)


class Window(NamedTuple):
    """One tumbling window of one period; `end` is exclusive. (A named tuple: hashed in C, it is a dict key
    for every stored reading.)"""

    period: str
    start: int  # µs
    end: int  # µs


class Due(NamedTuple):
    """A window to close, for these (sensor_id, metric) pairs of one partition."""

    partition: int
    window: Window
    keys: frozenset[tuple[str, str]]
    left: int = 0  # keys of this window that stay pending after these (closed by a later call)


class WindowTracker:
    """Per-partition watermarks and the windows holding readings not yet folded into their rows."""

    def __init__(self, periods: Iterable[str], grace_s: float, idle_close_s: float):
        self.sizes = {p: parse_period(p) * US for p in periods}
        self.grace = round(grace_s * US)
        self.idle_close_s = idle_close_s
        self.max_event: dict[int, int] = {}  # partition -> highest event time seen (µs)
        self.last_activity: dict[int, float] = {}  # partition -> wall clock of its last reading
        # (partition, window) -> its pending (sensor, metric) keys, per sensor (keys.py: no object per series).
        self.pending: dict[tuple[int, Window], PendingKeys] = {}
        # Every period is a multiple of this: two event times in the same step fall in the same windows.
        self.step = math.gcd(*self.sizes.values()) or 1

    def not_pending(self, rows: Iterable[tuple], partition_of: dict[str, int]) -> dict[tuple, dict]:
        """(partition, window) -> the (sensor_id, metric) keys of the rows (sensor_id, metric, value, ts µs) not
        already pending in that window, in order, once each; a reading's key is one tuple shared by its windows.
        A batch's readings fall in a handful of windows, so each (partition, step) is resolved to its windows and
        their pending keys once, not per reading and period."""
        pending, step, windows = self.pending, self.step, self.windows
        slots: dict[tuple[int, int], list] = {}
        new: dict[tuple, dict] = {}
        for sensor_id, metric, _value, ts in rows:
            partition = partition_of.get(sensor_id, -1)
            slot = slots.get((partition, ts - ts % step))
            if slot is None:
                slot = slots[(partition, ts - ts % step)] = []
                for w in windows(ts):
                    held = pending.get((partition, w))
                    slot.append((held.by_sensor if held is not None else None, new.setdefault((partition, w), {})))
            key = None
            for held, staged in slot:
                metrics = None if held is None else held.get(sensor_id)
                if metrics is None or metric not in metrics:
                    if key is None:
                        key = (sensor_id, metric)
                    staged[key] = None
        return {pw: keys for pw, keys in new.items() if keys}

    def windows(self, ts: int) -> list[Window]:
        """The window of each period that an event time (µs) falls in."""
        out = []
        for period, size in self.sizes.items():
            start = ts - ts % size
            out.append(Window(period, start, start + size))
        return out

    def observe(self, partition: int, ts: int, now: float) -> None:
        """A reading of `partition` with event time `ts` (µs) is durable: the watermark may move."""
        if ts > self.max_event.get(partition, -1):
            self.max_event[partition] = ts
        self.last_activity[partition] = now

    def taking_readings(self, now: float) -> bool:
        """True if a Kafka partition had a reading within idle_close_s (the daemon's own, partition -1, not counted)."""
        return any(p >= 0 and now - at < self.idle_close_s for p, at in self.last_activity.items())

    def watermark(self, partition: int) -> int | None:
        """Highest event time of the partition minus the grace, None before any reading."""
        high = self.max_event.get(partition)
        return None if high is None else high - self.grace

    def is_pending(self, partition: int, window: Window, sensor_id: str, metric: str) -> bool:
        """True if the window is already recorded as holding unfolded readings of that sensor and metric."""
        keys = self.pending.get((partition, window))
        if keys is None:
            return False
        metrics = keys.by_sensor.get(sensor_id)
        return metrics is not None and metric in metrics

    def is_closed(self, partition: int, window: Window) -> bool:
        """True if the watermark already passed the window: a reading for it is a late correction."""
        wm = self.watermark(partition)
        return wm is not None and wm >= window.end

    def add(self, partition: int, window: Window, sensor_id: str, metric: str) -> None:
        """The window now holds readings of (sensor, metric) not folded into its row (pending durably too)."""
        keys = self.pending.get((partition, window))
        if keys is None:
            keys = self.pending[(partition, window)] = PendingKeys()
        keys.add(sensor_id, metric)

    def load(self, partition: int, window: Window, sensor_id: str, metric: str, now: float) -> None:
        """A pending window found at start-up; its partition counts as active from `now`."""
        self.add(partition, window, sensor_id, metric)
        self.last_activity.setdefault(partition, now)

    def due(self, now: float, limit: int | None = None, owned=None) -> list[Due]:
        """Pending windows whose end the watermark passed (or the wall clock, on an idle partition), in closing
        order, with at most `limit` keys in all: the first keys of a window (sensor by sensor, in the order the
        sensors became pending) when the rest do not fit; `Due.left` says how many of its keys stay pending. `owned(partition)`: only
        windows of the partitions for which it holds."""
        wall = round(now * US) - self.grace
        ready = []
        for (partition, window) in self.pending:
            if owned is not None and partition >= 0 and not owned(partition):
                continue
            wm = self.watermark(partition)
            idle = now - self.last_activity.get(partition, now) >= self.idle_close_s
            if (wm is not None and wm >= window.end) or (idle and wall >= window.end):
                ready.append((partition, window))
        # In order of closing; of windows ending together the shortest first: longer ones are rolled up from it.
        ready.sort(key=lambda pw: (pw[1].end, -pw[1].start, pw[1].period, pw[0]))
        out = []
        room = limit if limit is not None else math.inf
        for partition, window in ready:
            if room <= 0:
                break
            keys = self.pending[(partition, window)]
            taken = keys.first(int(min(room, len(keys))))
            room -= len(taken)
            out.append(Due(partition, window, taken, len(keys) - len(taken)))
        return out

    def remove(self, due: Due) -> None:
        """The window's row is written: forget exactly the keys that were closed."""
        keys = self.pending.get((due.partition, due.window))
        if keys is None:
            return
        for sensor_id, metric in due.keys:
            keys.discard(sensor_id, metric)
        if not keys:
            del self.pending[(due.partition, due.window)]

    def rebuild(self) -> None:
        """Hold every pending window's keys in new containers, in the same order. Called after a large release:
        containers made during a flood (a day's window keeps them until midnight) sit in pymalloc arenas among
        the flood's freed objects, and an arena goes back to the system only once wholly empty (bench/RESULTS.md)."""
        self.pending = {(partition, Window(*window)): keys.copy() for (partition, window), keys in self.pending.items()}

    def reset_pending(self) -> None:
        """Forget every pending window (before they are loaded again from the database)."""
        self.pending.clear()

    def forget_partitions(self, gone) -> None:
        """Forget the watermarks and pending windows of the partitions for which `gone(partition)` holds (they
        stay pending in the database for their next owner). Readings made inside the daemon (partition -1) stay."""
        for key in [k for k in self.pending if k[0] >= 0 and gone(k[0])]:
            del self.pending[key]
        for d in (self.max_event, self.last_activity):
            for p in [p for p in d if p >= 0 and gone(p)]:
                del d[p]

    def pending_series(self, which=None) -> set[tuple[str, str]]:
        """(sensor_id, metric) of every window not yet closed (for which `which(window)` holds, if given)."""
        out: set[tuple[str, str]] = set()
        for (_partition, window), keys in self.pending.items():
            if which is None or which(window):
                out.update(keys)
        return out

    def pending_count(self) -> int:
        """How many (window, sensor, metric) entries wait to be closed."""
        return sum(k.count for k in self.pending.values())
