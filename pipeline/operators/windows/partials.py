"""Running values of the newest window per (sensor, metric, period): the dashboard's partials (Redis
`partial:<sensor_id>`).

Pure logic, no clocks and no IO: the caller passes `now`. The window math is the tracker's (tracker.py).
"""
from __future__ import annotations

import math
import sys
from array import array
from typing import Iterable

from orjson import dumps

from .tracker import US, Window, WindowTracker

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
