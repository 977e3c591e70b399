"""The detectors. Each is a small pure class: `evaluate(key, value, ts, rule) -> Signal | None`.

A Signal says what the reading means for the alert of that (sensor, metric, detector):
  severity set        the alert condition holds at that severity (open, or escalate if worse)
  CLEAR               back inside the bound by the deadband: counts towards resolving an open alert
  HOLD                neither: inside the deadband zone, or the condition has not yet held for the rule's
                      `for_s`; an open alert stays open, the clear streak restarts
  None                no opinion (warming up, rate window not yet full, out of order): changes nothing
A detector whose rule is None (not configured) answers CLEAR, so an alert it opened before a reload
turned it off still resolves. State (rate windows, EWMA, stuck runs, when a condition began) is keyed by
(sensor_id, metric).
"""
from __future__ import annotations

import functools
import math
from array import array
from dataclasses import dataclass

from ...config import OutlierRule, RateRule, StuckRule, ThresholdRule
from ..logcounts.counting import APP_SENSOR_TYPE

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Signal:
    """What one reading means for one detector's alert; `detail` completes the operator's sentence."""

    severity: str | None
    clear: bool = False
    bound: float | None = None
    detail: str = ""


CLEAR = Signal(None, clear=True)
HOLD = Signal(None, clear=False)


def _level(value: float, warning: float | None, critical: float | None) -> str | None:
    if critical is not None and value > critical:
        return "critical"
    if warning is not None and value > warning:
        return "warning"
    return None


@functools.lru_cache(maxsize=1024)
def _prepared(rule: ThresholdRule) -> tuple:
    """A rule's bounds in the order they are checked, and the band inside which a value clears (per reading,
    so derived once per rule: a frozen rule is its own cache key)."""
    checks = tuple((level, b.max, b.min) for level, b in (("critical", rule.critical), ("warning", rule.warning)))
    lows = [b.min for b in (rule.warning, rule.critical) if b.min is not None]
    highs = [b.max for b in (rule.warning, rule.critical) if b.max is not None]
    return (checks, max(lows) + rule.deadband if lows else -math.inf,
            min(highs) - rule.deadband if highs else math.inf)


class _KeyedDetector:
    """Per-(sensor, metric) history, in the dicts named by `_history`; forgotten through the owner's method.

    `evaluate` is shared: a detector judges one reading in `_judge`, and a verdict with a severity counts only
    once the condition has held for the rule's `for_s` seconds of event time (one hold rule for every
    detector). Until then the answer is HOLD, so an open alert stays open but no new one opens."""

    _history: tuple[str, ...] = ()

    def __init__(self):
        self.since: dict[Key, float] = {}  # key -> event time the condition first held (and kept holding)

    def evaluate(self, key: Key, value: float, ts: float, rule) -> Signal | None:
        """What this reading means for the alert of `key` under `rule` (None: the detector is off)."""
        if rule is None:
            self.since.pop(key, None)
            return CLEAR
        signal = self._judge(key, value, ts, rule)
        if signal is None:
            return None  # no opinion: neither starts nor breaks a hold
        if signal.severity is None:
            if self.since:
                self.since.pop(key, None)
            return signal
        if not rule.for_s:
            return signal
        first = self.since.setdefault(key, ts)
        if ts - first < rule.for_s:
            return HOLD
        return Signal(signal.severity, bound=signal.bound, detail=f"{signal.detail} for {ts - first:.0f} s")

    def _judge(self, key: Key, value: float, ts: float, rule) -> Signal | None:
        raise NotImplementedError

    def forget_series(self, keys: set[Key]) -> None:
        """Drop the history of these (sensor, metric) series (idle: limits.state_idle_s)."""
        for name in ("since",) + self._history:
            state = getattr(self, name)
            before = len(state)
            for key in keys:
                state.pop(key, None)
            if before - len(state) > len(state):  # a dict keeps its table when emptied: copied, it frees the memory
                setattr(self, name, dict(state))

    def forget(self, sensors: set[str]) -> None:
        """Drop the history of these sensors (their partition went to another instance, or they went idle)."""
        for name in ("since",) + self._history:
            state = getattr(self, name)
            for key in [k for k in state if k[0] in sensors]:
                del state[key]


class Threshold(_KeyedDetector):
    """Warning and critical min/max bounds; clears inside the innermost bounds by the deadband."""

    type = "threshold"

    def _judge(self, key: Key, value: float, ts: float, rule: ThresholdRule) -> Signal:
        checks, clear_low, clear_high = _prepared(rule)
        for level, high, low in checks:
            if high is not None and value > high:
                return Signal(level, bound=high, detail=f"above the {level} maximum {high:g}")
            if low is not None and value < low:
                return Signal(level, bound=low, detail=f"below the {level} minimum {low:g}")
        return CLEAR if clear_low <= value <= clear_high else HOLD


_T0, _V0, _ST, _SV, _STT, _STV, _POINTS = range(7)  # the layout of a rate window's array


class _Window:
    """The readings of one series in the rate window, with running sums for an O(1) least-squares slope.

    Times and values are kept relative to a reference (re-based from the kept readings now and then), so
    the sums stay small and subtracting evicted readings loses no precision that matters.

    One array of doubles holds the reference, the sums and the readings [ts, value, ts, value, ...] read from
    `head`, compacted now and then: 8 bytes a number instead of a 24-byte float object and a pointer, and no
    deque (about 700 bytes even when it holds one reading): limits.state_idle_s, memory per series in README."""

    __slots__ = ("a", "head")

    def __init__(self, ts: float, value: float):
        self.a = array("d", (ts, value, 0.0, 0.0, 0.0, 0.0))
        self.head = _POINTS  # index of the oldest kept reading's time

    def __len__(self) -> int:
        return (len(self.a) - self.head) >> 1

    @property
    def points(self) -> list[tuple[float, float]]:
        """The kept (ts, value) readings, oldest first."""
        a = self.a
        return [(a[i], a[i + 1]) for i in range(self.head, len(a), 2)]

    def first_ts(self) -> float:
        return self.a[self.head]

    def last_ts(self) -> float:
        return self.a[-2]

    def add(self, ts: float, value: float, window_s: float, max_samples: int) -> None:
        """Take a reading; drop those older than the window, and the oldest beyond `max_samples`."""
        a, head = self.a, self.head
        n, cutoff = len(a), ts - window_s
        while head < n and (a[head] <= cutoff or (n - head) >> 1 >= max_samples):
            self._sub(a[head], a[head + 1])
            head += 2
        if head > _POINTS and (head - _POINTS) * 2 >= n - _POINTS:  # at most half the readings are dropped ones
            del a[_POINTS:head]
            head = _POINTS
        self.head = head
        if ts - a[_T0] > 4 * window_s:
            self._rebase(ts, value)
        a.append(ts)
        a.append(value)
        t, v = ts - a[_T0], value - a[_V0]
        a[_ST] += t
        a[_SV] += v
        a[_STT] += t * t
        a[_STV] += t * v

    def _sub(self, ts: float, value: float) -> None:
        a = self.a
        t, v = ts - a[_T0], value - a[_V0]
        a[_ST] -= t
        a[_SV] -= v
        a[_STT] -= t * t
        a[_STV] -= t * v

    def _rebase(self, ts: float, value: float) -> None:
        a = self.a
        st = sv = stt = stv = 0.0
        for i in range(self.head, len(a), 2):
            t, v = a[i] - ts, a[i + 1] - value
            st += t
            sv += v
            stt += t * t
            stv += t * v
        a[_T0], a[_V0], a[_ST], a[_SV], a[_STT], a[_STV] = ts, value, st, sv, stt, stv

    def slope(self) -> float | None:
        """Least-squares slope (value per second) of the kept readings; None if their times do not spread."""
        n = len(self)
        a = self.a
        st, stt = a[_ST], a[_STT]
        den = n * stt - st * st
        if den <= 1e-9 * max(1.0, n * stt):
            return None
        return (n * a[_STV] - st * a[_SV]) / den


class Rate(_KeyedDetector):
    """Largest allowed slope per second: the least-squares fit over the readings of the last `window_s`
    seconds, judged once the window holds `min_samples` readings spanning `min_span_s`."""

    type = "rate"
    _history = ("windows",)

    def __init__(self):
        super().__init__()
        self.windows: dict[Key, _Window] = {}

    def _judge(self, key: Key, value: float, ts: float, rule: RateRule) -> Signal | None:
        w = self.windows.get(key)
        if w is None:
            w = self.windows[key] = _Window(ts, value)
        elif len(w) and ts <= w.last_ts():
            return None  # out of order or a duplicate: the window is a time series, it only moves forward
        w.add(ts, value, rule.window_s, rule.max_samples)
        n = len(w)
        span = ts - w.first_ts()
        if n < rule.min_samples or span < rule.min_span_s:
            return None
        slope = w.slope()
        if slope is None or not math.isfinite(slope):
            return None
        rate = abs(slope)
        level = _level(rate, rule.warning, rule.critical)
        if level is not None:
            limit = rule.critical if level == "critical" else rule.warning
            return Signal(level, bound=limit, detail=f"changed at {slope:+.4g}/s over the last {span:.0f} s "
                                                     f"({n} readings), above the {level} limit {limit:g}/s")
        limit = rule.warning if rule.warning is not None else rule.critical
        if limit is None or rate <= limit - rule.deadband:
            return CLEAR
        return HOLD


class Outlier(_KeyedDetector):
    """z-score against an exponentially weighted mean and deviation; silent for the first `min_samples`."""

    type = "outlier"
    _history = ("state",)

    def __init__(self):
        super().__init__()
        self.state: dict[Key, tuple[int, float, float]] = {}  # key -> (samples, mean, variance)

    def _judge(self, key: Key, value: float, ts: float, rule: OutlierRule) -> Signal | None:
        st = self.state.get(key)
        if st is None:
            self.state[key] = (1, value, 0.0)
            return None
        n, mean, var = st
        signal = None
        std = max(math.sqrt(var), rule.min_std)
        if n >= rule.min_samples and std > 0:
            z = abs(value - mean) / std
            level = _level(z, rule.z_warning, rule.z_critical)
            if level is not None:
                limit = rule.z_critical if level == "critical" else rule.z_warning
                signal = Signal(level, bound=limit, detail=f"{z:.1f} standard deviations from its recent mean {mean:.4g} "
                                                           f"(±{std:.3g}; {level} at {limit:g})")
            else:
                limit = rule.z_warning if rule.z_warning is not None else rule.z_critical
                signal = CLEAR if limit is None or z <= limit - rule.deadband else HOLD
        # The reading joins the statistics after it was judged, outlier or not: a lasting level shift is
        # absorbed instead of alerting forever.
        diff = value - mean
        incr = rule.alpha * diff
        mean, var = mean + incr, (1 - rule.alpha) * (var + diff * incr)
        # Readings near the float limit (1e200 and more) can overflow the variance; an inf or NaN state
        # would silence the detector for good, so it starts over from this reading instead.
        self.state[key] = (n + 1, mean, var) if math.isfinite(var) and math.isfinite(mean) else (1, value, 0.0)
        return signal


class Stuck(_KeyedDetector):
    """The same value (within `tolerance` of the run's first) `count` times in a row or for `seconds`."""

    type = "stuck"
    _history = ("run",)

    def __init__(self):
        super().__init__()
        self.run: dict[Key, tuple[float, float, int]] = {}  # key -> (first value, first ts, readings)

    def _judge(self, key: Key, value: float, ts: float, rule: StuckRule) -> Signal:
        if rule.count == 0 and rule.seconds == 0:
            return CLEAR
        run = self.run.get(key)
        if run is None or abs(value - run[0]) > rule.tolerance:
            self.run[key] = (value, ts, 1)
            return CLEAR
        first, since, n = run[0], run[1], run[2] + 1
        self.run[key] = (first, since, n)
        lasted = ts - since
        if (rule.count and n >= rule.count) or (rule.seconds and n >= 2 and lasted >= rule.seconds):
            limit = f"{rule.count} readings" if rule.count and n >= rule.count else f"{rule.seconds:g} s"
            return Signal(rule.severity, detail=f"has reported {first:g} {n} times in a row over {lasted:.0f} s "
                                                f"(limit {limit})")
        return CLEAR


def offline(silent_s: float, limit_s: float, severity: str) -> Signal:
    """The offline detector's verdict on a sensor silent for `silent_s` (the evaluator's timer asks)."""
    if silent_s > limit_s:
        return Signal(severity, bound=limit_s, detail=f"sent no reading for {silent_s:.0f} s (limit {limit_s:g} s)")
    return CLEAR


def offline_tracked(sensor_type: str | None) -> bool:
    """Whether silence from a sensor of this type can make it offline. The one rule for every path that starts
    a sensor's offline timer (a reading, the start-up load, the load on partition assignment): log counts
    (`app:<app>`) are not, since an app that stops logging is quiet, not gone."""
    return sensor_type != APP_SENSOR_TYPE
