"""A per-reading reference of the dashboard's partials: every reading updates the newest window of every period,
the way pipeline/operators/windows/partials.py did before it kept the current step's readings apart.

It is what `Partials` must show (tests/unit/operators/windows/test_partials_property.py). Its state per series:
[wall clock of the latest reading, then per period: start (µs; -inf: no window yet), count, total (times
SUM_SCALE), min, max].
"""
from __future__ import annotations

import math
from array import array

from pipeline.operators.windows.partials import SUM_SCALE
from pipeline.operators.windows.tracker import US, Window


class ReferencePartials:
    """Per (sensor, metric) and period the newest window's count/total/min/max, updated reading by reading."""

    def __init__(self, sizes: dict[str, int]):
        self.sizes = sizes
        self.acc: dict[tuple[str, str], array] = {}

    def _entry(self, sensor_id: str, metric: str, now: float) -> array:
        key = (sensor_id, metric)
        if key not in self.acc:
            self.acc[key] = array("d", [now] + [-math.inf, 0.0, 0.0, 0.0, 0.0] * len(self.sizes))
        return self.acc[key]

    def add(self, sensor_id: str, metric: str, ts: int, value: float, now: float = 0.0) -> None:
        """A newer window replaces the period's values, the same one takes the reading, an older one is ignored."""
        p = self._entry(sensor_id, metric, now)
        p[0] = now
        for i, size in zip(range(1, len(p), 5), self.sizes.values()):
            start = ts - ts % size
            if start > p[i]:
                p[i:i + 5] = array("d", [start, 1, value * SUM_SCALE, value, value])
            elif start == p[i]:
                p[i + 1] += 1
                p[i + 2] += value * SUM_SCALE
                p[i + 3] = min(p[i + 3], value)
                p[i + 4] = max(p[i + 4], value)

    def seed(self, sensor_id: str, metric: str, window: Window, count: int, total: float, lo: float, hi: float,
             now: float = 0.0) -> None:
        """Values recomputed from durable readings replace the period's only if their window is newer."""
        if window.period not in self.sizes:
            return
        p = self._entry(sensor_id, metric, now)
        i = 1 + 5 * list(self.sizes).index(window.period)
        if window.start > p[i]:
            p[i:i + 5] = array("d", [window.start, count, total * SUM_SCALE, lo, hi])

    def fields(self, sensor_id: str, metrics) -> dict[str, dict]:
        """Hash fields `<metric>:<period>` -> the values published of each period's newest window."""
        out = {}
        for metric in metrics:
            p = self.acc.get((sensor_id, metric))
            if p is None:
                continue
            for i, (period, size) in zip(range(1, len(p), 5), self.sizes.items()):
                start, count, total, lo, hi = p[i:i + 5]
                if start > -math.inf:
                    avg = total / count / SUM_SCALE
                    avg = avg if lo <= avg <= hi else (lo if avg < lo else hi)  # rounding at the float range's edge
                    out[f"{metric}:{period}"] = {"start": start / US, "end": (start + size) / US, "count": int(count),
                                                 "avg": avg, "min": lo, "max": hi}
        return out
