"""Tumbling event-time windows: period labels, window math, per-partition watermarks, running values.

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
import sys
from array import array
from datetime import datetime, timedelta
from typing import Iterable, NamedTuple

from orjson import dumps

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


# Running sums are kept times 2**-64: exact for every double above 1e-289 (a power of two only moves the
# exponent), so the average is the same as an unscaled one, but two readings of 1e308 no longer sum to inf.
SUM_SCALE = 2.0 ** -64
CACHED_NAMES = 4096  # metrics whose field names Partials.encode keeps formatted, at most (then it starts again)


def _within(avg: float, lo: float, hi: float) -> float:
    """The mean of values in [lo, hi] lies there too; rounding at the edge of the float range (or an
    overflowed seed) must not make it inf or NaN."""
    return avg if lo <= avg <= hi else (lo if avg < lo else hi)


class _Running(array):
    """The running values of one series (laid out as Partials says), and the (sensor, metric) key it is held under."""

    __slots__ = ("key",)


class Partials:
    """Running count/sum/min/max of the newest window per (sensor, metric, period), for the dashboard.
    Released per series by `evict_idle` once the series has had no reading for a while and no window of it
    is pending (a returning series starts a new window, as after a restart).

    One array of doubles per series, [wall clock of its latest reading, then per period: start (µs, exact
    below 2**53; -inf: no window yet), count, total, min, max], mutated in place, with the series' key beside
    it: 8 bytes a number instead of a float object and a pointer (limits.state_idle_s, memory per series in
    README)."""

    def __init__(self, tracker: WindowTracker):
        self.tracker = tracker
        self.acc: dict[tuple[str, str], _Running] = {}
        self._size_list = list(tracker.sizes.values())
        self._names: dict[str, list[str]] = {}  # metric -> its field names (encode)

    def _entry(self, sensor_id: str, metric: str, now: float) -> _Running:
        key = (sensor_id, metric)
        p = self.acc.get(key)
        if p is None:
            # Metric names repeat across sensors, a sensor's id across its metrics (each row read back from
            # PostgreSQL is a string of its own): one string each, not one per series, and none of them kept
            # alive by a key pending in a long window after the rest of a flood's objects are gone.
            key = (sys.intern(sensor_id), sys.intern(metric))
            p = self.acc[key] = _Running("d", [now] + [-math.inf, 0.0, 0.0, 0.0, 0.0] * len(self.tracker.sizes))
            p.key = key
        return p

    def add(self, sensor_id: str, metric: str, ts: int, value: float, now: float = 0.0) -> None:
        """Fold one newly stored reading (stored at wall clock `now`) into the running values of its windows."""
        p = self._entry(sensor_id, metric, now)
        p[0] = now
        i = 1
        for size in self.tracker.sizes.values():
            start = ts - ts % size
            current = p[i]
            if start > current:
                p[i], p[i + 1], p[i + 2], p[i + 3], p[i + 4] = start, 1, value * SUM_SCALE, value, value
            elif start == current:
                p[i + 1] += 1
                p[i + 2] += value * SUM_SCALE
                if value < p[i + 3]:
                    p[i + 3] = value
                if value > p[i + 4]:
                    p[i + 4] = value
            # an older window: its row is (re)computed from measurements; the partial shows the newest only
            i += 5

    def seed(self, sensor_id: str, metric: str, window: Window, count: int, total: float, lo: float, hi: float,
             now: float = 0.0) -> None:
        """Running values recomputed from durable readings at start-up (newest window wins)."""
        periods = list(self.tracker.sizes)
        if window.period not in periods:
            return
        p = self._entry(sensor_id, metric, now)
        i = 1 + 5 * periods.index(window.period)
        if window.start > p[i]:
            p[i], p[i + 1], p[i + 2], p[i + 3], p[i + 4] = window.start, count, total * SUM_SCALE, lo, hi

    def evict_idle(self, cutoff: float, pending: set[tuple[str, str]]) -> int:
        """Drop the running values of series without a reading since wall clock `cutoff`, unless a window of
        theirs is still pending (`pending`: (sensor, metric) pairs). Returns how many series went."""
        gone = [k for k, p in self.acc.items() if p[0] < cutoff and k not in pending]
        for key in gone:
            del self.acc[key]
        if len(gone) > len(self.acc):  # a dict keeps its table when emptied: copied, it frees the memory
            self.acc = dict(self.acc)
        return len(gone)

    def fields(self, sensor_id: str, metrics: Iterable[str]) -> dict[str, dict]:
        """Hash fields `<metric>:<period>` -> running values of the newest window, for one sensor."""
        out = {}
        for metric in metrics:
            p = self.acc.get((sensor_id, metric))
            if p is None:
                continue
            i = 1
            for period, size in self.tracker.sizes.items():
                start, count, total, lo, hi = p[i:i + 5]
                i += 5
                if start > -math.inf:
                    out[f"{metric}:{period}"] = {"start": start / US, "end": (start + size) / US, "count": int(count),
                                                 "avg": _within(total / count / SUM_SCALE, lo, hi), "min": lo, "max": hi}
        return out

    def encoded(self, sensor_id: str, metrics: Iterable[str]) -> list:
        """`fields` as the flat argument list of an HSET: field, its JSON, field, its JSON ... (the same JSON
        that `fields` gives, formatted directly: a second of a large fleet's partials is tens of thousands of fields)."""
        return self.encode(self.copies(sensor_id, metrics))

    def copies(self, sensor_id: str, metrics: Iterable[str]) -> list[tuple[str, array]]:
        """(metric, a copy of its running values) of a sensor's series held here: what `encode` formats, taken
        under the owner's lock and formatted outside it."""
        acc = self.acc
        return [(metric, array("d", p)) for metric in metrics if (p := acc.get((sensor_id, metric))) is not None]

    def encode(self, copies: list[tuple[str, array]]) -> list:
        """`copies` as HSET arguments (see `encoded`), each JSON formatted by orjson (bytes): a large fleet's
        partials are tens of thousands of fields a second, and Python's float repr in an f-string cost three
        times as much (bench/RESULTS.md). The field names are formatted once per metric."""
        out: list = []
        append = out.append
        names = self._names
        sizes = self._size_list
        for metric, p in copies:
            fields = names.get(metric)
            if fields is None:
                fields = self._field_names(metric)
            i = 1
            for n, size in enumerate(sizes):
                start = p[i]
                if start > -math.inf:
                    count, lo, hi = p[i + 1], p[i + 3], p[i + 4]
                    avg = p[i + 2] / count / SUM_SCALE
                    if not lo <= avg <= hi:  # see _within
                        avg = lo if avg < lo else hi
                    append(fields[n])
                    append(dumps({"start": start / US, "end": (start + size) / US, "count": int(count), "avg": avg,
                                  "min": lo, "max": hi}))
                i += 5
        return out

    def _field_names(self, metric: str) -> list[str]:
        """`<metric>:<period>` for each period, cached (metric names repeat across sensors; bounded all the same)."""
        if len(self._names) >= CACHED_NAMES:
            self._names = {}
        names = self._names[metric] = [f"{metric}:{period}" for period in self.tracker.sizes]
        return names
