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


class _Running(array):
    """The running values of one series (laid out as Partials says), and the (sensor, metric) key it is held under."""

    __slots__ = ("key",)


def _newest(start: float, count: float, total: float, lo: float, hi: float,
            start2: float, count2: float, total2: float, lo2: float, hi2: float) -> tuple:
    """Two windows' aggregates (start, count, total, min, max) as a partial shows them: the newer window's (a
    partial shows the newest window only; an older one's row is computed from the readings when it closes), or
    both added up if it is the same window."""
    if start2 > start:
        return start2, count2, total2, lo2, hi2
    if start2 < start:
        return start, count, total, lo, hi
    return start, count + count2, total + total2, lo2 if lo2 < lo else lo, hi2 if hi2 > hi else hi


def _spread(p: array, slots: list[tuple[int, int]], first: int | float, count: float, total: float, lo: float,
            hi: float) -> None:
    """Aggregates of readings of the step beginning at `first` into each of `slots` ((index in `p`, period size)),
    in the window of that period holding the step, by the rule of `_newest`, written out on the slots: calling
    it from here made a fold cost twice as much (1.1 -> 2.3 µs for three periods), and with a reading a step a
    fold comes with every reading."""
    for i, size in slots:
        start = first - first % size
        held = p[i]
        if start > held:
            p[i], p[i + 1], p[i + 2], p[i + 3], p[i + 4] = start, count, total, lo, hi
        elif start == held:
            p[i + 1] += count
            p[i + 2] += total
            if lo < p[i + 3]:
                p[i + 3] = lo
            if hi > p[i + 4]:
                p[i + 4] = hi


class Partials:
    """Running count/sum/min/max of the newest window per (sensor, metric, period), for the dashboard.
    Released per series by `evict_idle` once the series has had no reading for a while and no window of it
    is pending (a returning series starts a new window, as after a restart).

    A series reports many times a step (tracker.step, the gcd of the periods: a step lies in one window of
    every period), so its readings are first summed per step, in one slot, and go into the periods' slots once
    a newer step begins: a reading costs one slot's update instead of one per period (4 by default).

    One array of doubles per series, mutated in place, with the series' key beside it (8 bytes a number instead
    of a float object and a pointer: limits.state_idle_s, memory per series in README): the wall clock of its
    latest reading, then slots of (start µs, exact below 2**53, -inf: none yet; count; total; min; max):
    - at 1, the step: the newest step the series has readings of (or a seed of the period shown from it). Its
      count is positive while those readings are in no other slot ("open"), negative once they are, or when it
      holds a seed ("folded").
    - at 6, 11, ..., one per period: the newest window of the readings not in an open step slot. The first
      period as long as the step (1m of the default 1m, 5m, 1h, 1d) has none: it is shown from the step slot.
    A period shows its slot combined with an open step slot (`_shown`, in the publishing thread).
    With a period as long as the step, a series holds as many numbers as with one slot per period; without one
    (1m and 90s: a step of 30 s), a slot more (40 bytes). Sharing the slot is what the sign of its count is
    for: a seed there must not be folded into the longer periods, which have seeds of their own."""

    def __init__(self, tracker: WindowTracker):
        self.tracker = tracker
        self.step = tracker.step
        self.acc: dict[tuple[str, str], _Running] = {}
        self._periods = list(tracker.sizes)
        self._names: dict[str, list[str]] = {}  # metric -> its field names (encode)
        shown_by_step = next((period for period, size in tracker.sizes.items() if size == self.step), None)
        self._slot: dict[str, int] = {}  # period -> the index of the slot it shows
        self._apart: list[tuple[int, int]] = []  # (index, size) of the periods' own slots, in order
        for period, size in tracker.sizes.items():
            self._slot[period] = 1 if period == shown_by_step else 6 + 5 * len(self._apart)
            if period != shown_by_step:
                self._apart.append((self._slot[period], size))
        self._step_slot = [(1, self.step)]
        self._blank = [-math.inf, 0.0, 0.0, 0.0, 0.0] * (1 + len(self._apart))
        self._shows = [(n, size, self._slot[period]) for n, (period, size) in enumerate(tracker.sizes.items())]

    def _entry(self, sensor_id: str, metric: str, now: float) -> _Running:
        key = (sensor_id, metric)
        p = self.acc.get(key)
        if p is None:
            # Metric names repeat across sensors, a sensor's id across its metrics (each row read back from
            # PostgreSQL is a string of its own): one string each, not one per series, and none of them kept
            # alive by a key pending in a long window after the rest of a flood's objects are gone.
            key = (sys.intern(sensor_id), sys.intern(metric))
            p = self.acc[key] = _Running("d", [now] + self._blank)
            p.key = key
        return p

    def add(self, sensor_id: str, metric: str, ts: int, value: float, now: float = 0.0) -> None:
        """Fold one newly stored reading (stored at wall clock `now`) into the running values of its windows."""
        self.add_rows(((sensor_id, metric, value, ts),), now)

    def add_rows(self, rows: Iterable[tuple], now: float) -> None:
        """Fold newly stored readings (sensor_id, metric, value, ts µs: the rows the PostgreSQL sink inserted),
        stored at wall clock `now`, into the running values of their windows. Called for every stored reading:
        the common case, a reading in its series' open step, is inlined."""
        get, entry, elsewhere = self.acc.get, self._entry, self._add_elsewhere
        step = self.step
        scale = SUM_SCALE
        for sensor_id, metric, value, ts in rows:
            p = get((sensor_id, metric))
            if p is None:
                p = entry(sensor_id, metric, now)
            p[0] = now
            first = ts - ts % step
            if first == p[1] and p[2] > 0.0:
                p[2] += 1.0
                p[3] += value * scale
                if value < p[4]:
                    p[4] = value
                elif value > p[5]:  # (below the minimum, it is not above the maximum)
                    p[5] = value
            else:
                elsewhere(p, first, value)

    def _add_elsewhere(self, p: _Running, first: int, value: float) -> None:
        """A reading not in its series' open step (`first`: its step's start): of a newer step it opens the step
        slot (the previous step folded first); of the folded step it goes into the step slot and, as folded, into
        the periods' slots at once; of an older step (late or out of order) into the periods' slots only (the
        step slot shows a newer step)."""
        scaled = value * SUM_SCALE
        if first > p[1]:
            self._fold(p)
            p[1], p[2], p[3], p[4], p[5] = first, 1.0, scaled, value, value
            return
        if first == p[1]:
            _spread(p, self._step_slot, first, -1.0, scaled, value, value)  # a folded slot's count is negative
        _spread(p, self._apart, first, 1.0, scaled, value, value)

    def _fold(self, p: array) -> None:
        """An open step slot's readings into the periods' slots; the step slot is folded."""
        count = p[2]
        if count > 0.0:
            _spread(p, self._apart, p[1], count, p[3], p[4], p[5])
            p[2] = -count

    def seed(self, sensor_id: str, metric: str, window: Window, count: int, total: float, lo: float, hi: float,
             now: float = 0.0) -> None:
        """Running values recomputed from durable readings at start-up (newest window wins)."""
        i = self._slot.get(window.period)
        if i is None:
            return
        p = self._entry(sensor_id, metric, now)
        # Folded first, every slot holds what its period shows. A seed in the step slot is folded: its readings are
        # the seeded period's alone (a longer period's window has a seed of its own).
        self._fold(p)
        if window.start > p[i]:
            p[i], p[i + 1], p[i + 2], p[i + 3], p[i + 4] = (window.start, -count if i == 1 else count,
                                                            total * SUM_SCALE, lo, hi)

    def _shown(self, p: array) -> list[tuple[int, dict]]:
        """(position of the period, its newest window's values as published) for each period with a window, from a
        series' values `p` (or a copy): a period's slot combined with an open step slot, or the step slot itself.
        Once a second per touched series, as often as a reading when series report every few seconds."""
        s0, c0, t0, lo0, hi0 = p[1:6]
        out = []
        for n, size, i in self._shows:
            if i == 1:
                window = s0, abs(c0), t0, lo0, hi0  # (negative when folded)
            elif c0 > 0.0:
                window = _newest(p[i], p[i + 1], p[i + 2], p[i + 3], p[i + 4], s0 - s0 % size, c0, t0, lo0, hi0)
            else:
                window = p[i], p[i + 1], p[i + 2], p[i + 3], p[i + 4]
            start, count, total, lo, hi = window
            if start > -math.inf:
                avg = total / count / SUM_SCALE
                if not lo <= avg <= hi:  # rounding at the edge of the float range (or an overflowed seed): no inf/NaN
                    avg = lo if avg < lo else hi
                out.append((n, {"start": start / US, "end": (start + size) / US, "count": int(count), "avg": avg,
                                "min": lo, "max": hi}))
        return out

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
            if p is not None:
                out.update((f"{metric}:{self._periods[n]}", values) for n, values in self._shown(p))
        return out

    def encoded(self, sensor_id: str, metrics: Iterable[str]) -> list:
        """`fields` as the flat argument list of an HSET: field, its JSON, field, its JSON ... (the same JSON
        that `fields` gives, formatted directly: a second of a large fleet's partials is tens of thousands of fields)."""
        return self.encode(self.copies(sensor_id, metrics))

    def copies(self, sensor_id: str, metrics: Iterable[str]) -> list[tuple[str, array]]:
        """(metric, a copy of its running values) of a sensor's series held here: what `encode` combines and
        formats, taken under the owner's lock and formatted outside it (by the publishing thread)."""
        acc = self.acc
        return [(metric, array("d", p)) for metric in metrics if (p := acc.get((sensor_id, metric))) is not None]

    def encode(self, copies: list[tuple[str, array]]) -> list:
        """`copies` as HSET arguments (see `encoded`), each JSON formatted by orjson (bytes): a large fleet's
        partials are tens of thousands of fields a second, and Python's float repr in an f-string cost three
        times as much (bench/RESULTS.md). The field names are formatted once per metric."""
        out: list = []
        append = out.append
        names = self._names
        shown = self._shown
        for metric, p in copies:
            fields = names.get(metric)
            if fields is None:
                fields = self._field_names(metric)
            for n, values in shown(p):
                append(fields[n])
                append(dumps(values))
        return out

    def _field_names(self, metric: str) -> list[str]:
        """`<metric>:<period>` for each period, cached (metric names repeat across sensors; bounded all the same)."""
        if len(self._names) >= CACHED_NAMES:
            self._names = {}
        names = self._names[metric] = [f"{metric}:{period}" for period in self.tracker.sizes]
        return names
