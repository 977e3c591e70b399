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
from .detectors import CLEAR, HISTORY, HOLD, Signal, SeriesDetector, level_above, with_history

T0, V0, ST, SV, STT, STV = range(HISTORY, HISTORY + 6)  # after the outlier's and stuck run's places
POINTS = HISTORY + 6  # the kept readings start here


def _start(s: array, ts: float, value: float) -> None:
    """An empty window in `s`, referenced at the first reading."""
    with_history(s)
    s.extend((ts, value, 0.0, 0.0, 0.0, 0.0))


def count(s: array) -> int:
    """How many readings the window of `s` holds (0 without a window)."""
    return (len(s) - POINTS) >> 1 if len(s) >= POINTS else 0


def points(s: array) -> list[tuple[float, float]]:
    """The kept (ts, value) readings, oldest first."""
    return [(s[i], s[i + 1]) for i in range(POINTS, len(s), 2)]


def _add(s: array, ts: float, value: float, window_s: float, max_samples: int) -> None:
    """Take a reading; drop those older than the window, and the oldest beyond `max_samples`."""
    head, n, cutoff = POINTS, len(s), ts - window_s
    while head < n and (s[head] <= cutoff or (n - head) >> 1 >= max_samples):
        _sub(s, s[head], s[head + 1])
        head += 2
    if head > POINTS:
        del s[POINTS:head]
    if ts - s[T0] > 4 * window_s:
        _rebase(s, ts, value)
    s.append(ts)
    s.append(value)
    t, v = ts - s[T0], value - s[V0]
    s[ST] += t
    s[SV] += v
    s[STT] += t * t
    s[STV] += t * v


def _sub(s: array, ts: float, value: float) -> None:
    t, v = ts - s[T0], value - s[V0]
    s[ST] -= t
    s[SV] -= v
    s[STT] -= t * t
    s[STV] -= t * v


def _rebase(s: array, ts: float, value: float) -> None:
    st = sv = stt = stv = 0.0
    for i in range(POINTS, len(s), 2):
        t, v = s[i] - ts, s[i + 1] - value
        st += t
        sv += v
        stt += t * t
        stv += t * v
    s[T0], s[V0], s[ST], s[SV], s[STT], s[STV] = ts, value, st, sv, stt, stv


def window_slope(s: array) -> float | None:
    """Least-squares slope (value per second) of the kept readings; None if their times do not spread."""
    n = count(s)
    st, stt = s[ST], s[STT]
    den = n * stt - st * st
    if den <= 1e-9 * max(1.0, n * stt):
        return None
    return (n * s[STV] - st * s[SV]) / den


class Rate(SeriesDetector):
    """Largest allowed slope per second: the least-squares fit over the readings of the last `window_s`
    seconds, judged once the window holds `min_samples` readings spanning `min_span_s`."""

    type = "rate"

    def _judge(self, s: array, value: float, ts: float, rule: RateRule) -> Signal | None:
        if len(s) < POINTS:
            _start(s, ts, value)
        elif len(s) > POINTS and ts <= s[-2]:
            return None  # out of order or a duplicate: the window is a time series, it only moves forward
        _add(s, ts, value, rule.window_s, rule.max_samples)
        n = count(s)
        span = ts - s[POINTS]
        if n < rule.min_samples or span < rule.min_span_s:
            return None
        slope = window_slope(s)
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
