"""The rate detector: the least-squares slope of a series over the readings of its last `window_s` seconds.

Its window lives in the series' array (detectors.py) after the outlier's and stuck run's places: a reference
point, running sums for an O(1) slope, then the kept readings [ts, value, ts, value, ...], oldest first. 8
bytes a number instead of a 24-byte float object and a pointer, and no deque (about 700 bytes even when it
holds one reading). Readings leaving the window are cut off at once (a move of at most `max_samples` pairs
of doubles), so the array holds the window and no dropped readings.

Times and values are kept relative to the reference (re-based from the kept readings now and then), so the
sums stay small and subtracting evicted readings loses no precision that matters.
"""
from __future__ import annotations

import math
from array import array

from ...config import RateRule
from ...registry import detectors as registry
from .detectors import CLEAR, HISTORY, HOLD, Signal, SeriesDetector, level_above

# Places relative to the window's start `b` (the end of every detector's fixed places, HISTORY without plug-ins):
# reference time and value, the four running sums; the kept readings from b + POINTS on.
T0, V0, ST, SV, STT, STV = range(6)
POINTS = 6


def count(s: array, b: int = HISTORY) -> int:
    """How many readings the window of `s` holds (0 without a window)."""
    return (len(s) - b - POINTS) >> 1 if len(s) >= b + POINTS else 0


def points(s: array, b: int = HISTORY) -> list[tuple[float, float]]:
    """The kept (ts, value) readings, oldest first."""
    return [(s[i], s[i + 1]) for i in range(b + POINTS, len(s), 2)]


def _add(s: array, b: int, ts: float, value: float, window_s: float, max_samples: int) -> None:
    """Take a reading; drop those older than the window, and the oldest beyond `max_samples`."""
    start = b + POINTS
    head, n, cutoff = start, len(s), ts - window_s
    while head < n and (s[head] <= cutoff or (n - head) >> 1 >= max_samples):
        _sub(s, b, s[head], s[head + 1])
        head += 2
    if head > start:
        del s[start:head]
    if ts - s[b] > 4 * window_s:
        _rebase(s, b, ts, value)
    s.append(ts)
    s.append(value)
    t, v = ts - s[b], value - s[b + 1]
    s[b + ST] += t
    s[b + SV] += v
    s[b + STT] += t * t
    s[b + STV] += t * v


def _sub(s: array, b: int, ts: float, value: float) -> None:
    t, v = ts - s[b], value - s[b + 1]
    s[b + ST] -= t
    s[b + SV] -= v
    s[b + STT] -= t * t
    s[b + STV] -= t * v


def _rebase(s: array, b: int, ts: float, value: float) -> None:
    st = sv = stt = stv = 0.0
    for i in range(b + POINTS, len(s), 2):
        t, v = s[i] - ts, s[i + 1] - value
        st += t
        sv += v
        stt += t * t
        stv += t * v
    s[b:b + POINTS] = array("d", (ts, value, st, sv, stt, stv))


def window_slope(s: array, b: int = HISTORY) -> float | None:
    """Least-squares slope (value per second) of the kept readings; None if their times do not spread."""
    n = count(s, b)
    st, stt = s[b + ST], s[b + STT]
    den = n * stt - st * st
    if den <= 1e-9 * max(1.0, n * stt):
        return None
    return (n * s[b + STV] - st * s[b + SV]) / den


class Rate(SeriesDetector):
    """Largest allowed slope per second: the least-squares fit over the readings of the last `window_s`
    seconds, judged once the window holds `min_samples` readings spanning `min_span_s`."""

    type = "rate"

    def _judge(self, s: array, value: float, ts: float, rule: RateRule) -> Signal | None:
        b = self.history  # the window starts after every detector's fixed places
        start = b + POINTS
        if len(s) < start:
            self.with_history(s)
            s.extend((ts, value, 0.0, 0.0, 0.0, 0.0))  # an empty window, referenced at the first reading
        elif len(s) > start and ts <= s[-2]:
            return None  # out of order or a duplicate: the window is a time series, it only moves forward
        _add(s, b, ts, value, rule.window_s, rule.max_samples)
        n = count(s, b)
        span = ts - s[start]
        if n < rule.min_samples or span < rule.min_span_s:
            return None
        slope = window_slope(s, b)
        if slope is None or not math.isfinite(slope):
            return None
        rate = abs(slope)
        level = level_above(rate, rule.warning, rule.critical)
        if level is not None:
            limit = rule.critical if level == "critical" else rule.warning
            return Signal(level, bound=limit, detail=f"changed at {slope:+.4g}/s over the last {span:.0f} s "
                                                     f"({n} readings), above the {level} limit {limit:g}/s")
        limit = rule.warning if rule.warning is not None else rule.critical
        if limit is None or rate <= limit - rule.deadband:
            return CLEAR
        return HOLD


registry.register(registry.DetectorSpec(
    "rate", RateRule, lambda offset, history: Rate().placed(offset, history), history=True, tail=True,
    value_after=True, order=20, doc="least-squares slope over a window"))
