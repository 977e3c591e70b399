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
import struct
from array import array

from ...config import RateRule
from ...registry import detectors as registry
from .detectors import CLEAR, HISTORY, HOLD, Signal, SeriesDetector

# Places relative to the window's start `b` (the end of every detector's fixed places, HISTORY without plug-ins):
# reference time and value, the four running sums; the kept readings from b + POINTS on.
T0, V0, ST, SV, STT, STV = range(6)
POINTS = 6
# The window's numbers read and written through the array's buffer, several at a time: an array subscript or
# append converts each double on its own (an argument parser per store), a struct does them in one call.
_BYTES = array("d").itemsize
_HEAD, _SUMS, _READING = struct.Struct("6d"), struct.Struct("4d"), struct.Struct("2d")


def count(s: array, b: int = HISTORY) -> int:
    """How many readings the window of `s` holds (0 without a window)."""
    return (len(s) - b - POINTS) >> 1 if len(s) >= b + POINTS else 0


def points(s: array, b: int = HISTORY) -> list[tuple[float, float]]:
    """The kept (ts, value) readings, oldest first."""
    return [(s[i], s[i + 1]) for i in range(b + POINTS, len(s), 2)]


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


def take(s: array, b: int, ts: float, value: float, rule: RateRule) -> float | None:
    """Take a reading later than the window's latest into it (those leaving the window dropped first) and return
    the window's least-squares slope: None until the window holds `min_samples` readings spanning `min_span_s`,
    when its times do not spread, or when the sums overflowed."""
    # Taking the reading, count and window_slope, inline, with the sums in locals: this runs for every reading
    # of a series with a rate rule (Rate.judge and the evaluator's combined plan, plan.py).
    start, n = b + POINTS, len(s)
    t0, v0, st, sv, stt, stv = _HEAD.unpack_from(s, b * _BYTES)  # reference and sums
    head, cutoff, max_samples = start, ts - rule.window_s, rule.max_samples
    while head < n and (s[head] <= cutoff or (n - head) >> 1 >= max_samples):
        t, v = s[head] - t0, s[head + 1] - v0  # _sub
        st -= t
        sv -= v
        stt -= t * t
        stv -= t * v
        head += 2
    if head > start:
        del s[start:head]
    if ts - t0 > 4 * rule.window_s:
        _rebase(s, b, ts, value)  # sums from the kept readings, referenced at this one
        t0, v0 = ts, value
        st, sv, stt, stv = s[b + ST], s[b + SV], s[b + STT], s[b + STV]
    s.frombytes(_READING.pack(ts, value))
    t, v = ts - t0, value - v0
    st += t
    sv += v
    stt += t * t
    stv += t * v
    _SUMS.pack_into(s, (b + ST) * _BYTES, st, sv, stt, stv)
    count = (len(s) - start) >> 1
    span = ts - s[start]
    if count < rule.min_samples or span < rule.min_span_s:
        return None
    den = count * stt - st * st
    if den <= 1e-9 * (count * stt if count * stt > 1.0 else 1.0):  # max(1.0, n * stt) as window_slope
        return None
    slope = (count * stv - st * sv) / den
    return slope if math.isfinite(slope) else None


class Rate(SeriesDetector):
    """Largest allowed slope per second: the least-squares fit over the readings of the last `window_s`
    seconds, judged once the window holds `min_samples` readings spanning `min_span_s`."""

    type = "rate"

    def judge(self, key, value: float, ts: float, rule: RateRule, s: array) -> Signal | None:
        b = self.history  # the window starts after every detector's fixed places
        n = len(s)
        if n < b + POINTS:
            self.with_history(s)
            s.extend((ts, value, 0.0, 0.0, 0.0, 0.0))  # an empty window, referenced at the first reading
        elif n > b + POINTS and ts <= s[-2]:
            return None  # out of order or a duplicate: the window is a time series, it only moves forward
        slope = take(s, b, ts, value, rule)
        if slope is None:
            return None
        return self.verdict(key, slope, ts, rule, s)

    def verdict(self, key, slope: float, ts: float, rule: RateRule, s: array) -> Signal:
        """The verdict on the finite slope of the window of `s` that has just taken the reading at `ts`, with
        the hold (`for_s`)."""
        n, span = count(s, self.history), ts - s[self.history + POINTS]
        rate = abs(slope)
        warning, critical = rule.warning, rule.critical
        if critical is not None and rate > critical:
            signal = Signal("critical", bound=critical, detail=f"changed at {slope:+.4g}/s over the last {span:.0f} s "
                                                               f"({n} readings), above the critical limit {critical:g}/s")
        elif warning is not None and rate > warning:
            signal = Signal("warning", bound=warning, detail=f"changed at {slope:+.4g}/s over the last {span:.0f} s "
                                                             f"({n} readings), above the warning limit {warning:g}/s")
        else:
            if self.since:
                self.since.pop(key, None)
            limit = warning if warning is not None else critical
            return CLEAR if limit is None or rate <= limit - rule.deadband else HOLD
        return self._held(key, signal, ts, rule) if rule.for_s else signal

registry.register(registry.DetectorSpec(
    "rate", RateRule, lambda offset, history: Rate().placed(offset, history), history=True, tail=True,
    value_after=True, order=20, doc="least-squares slope over a window"))
