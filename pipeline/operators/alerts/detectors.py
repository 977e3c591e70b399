"""The detectors. Each is a small pure class: `evaluate(key, value, ts, rule) -> Signal | None`.

A Signal says what the reading means for the alert of that (sensor, metric, detector):
  severity set        the alert condition holds at that severity (open, or escalate if worse)
  CLEAR               back inside the bound by the deadband: counts towards resolving an open alert
  HOLD                neither: inside the deadband zone; an open alert stays open, the clear streak restarts
  None                no opinion (warming up, too soon after the previous reading): changes nothing
A detector whose rule is None (not configured) answers CLEAR, so an alert it opened before a reload
turned it off still resolves. State (previous values, EWMA) is keyed by (sensor_id, metric).
"""
from __future__ import annotations

import functools
import math
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
    """Per-(sensor, metric) history, in the dicts named by `_history`; forgotten through the owner's method."""

    _history: tuple[str, ...] = ()

    def forget(self, sensors: set[str]) -> None:
        """Drop the history of these sensors (their partition went to another instance, or they went idle)."""
        for name in self._history:
            state = getattr(self, name)
            for key in [k for k in state if k[0] in sensors]:
                del state[key]


class Threshold(_KeyedDetector):
    """Warning and critical min/max bounds, optionally held for `for_s` seconds before they count; clears
    inside the innermost bounds by the deadband."""

    type = "threshold"
    _history = ("since",)

    def __init__(self):
        self.since: dict[Key, float] = {}  # key -> event time the value first went (and stayed) out of bounds

    def evaluate(self, key: Key, value: float, ts: float, rule: ThresholdRule | None) -> Signal | None:
        if rule is None:
            self.since.pop(key, None)
            return CLEAR
        checks, clear_low, clear_high = _prepared(rule)
        for level, high, low in checks:
            if high is not None and value > high:
                return self._held(key, ts, rule, Signal(level, bound=high, detail=f"above the {level} maximum {high:g}"))
            if low is not None and value < low:
                return self._held(key, ts, rule, Signal(level, bound=low, detail=f"below the {level} minimum {low:g}"))
        if self.since:
            self.since.pop(key, None)
        return CLEAR if clear_low <= value <= clear_high else HOLD

    def _held(self, key: Key, ts: float, rule: ThresholdRule, signal: Signal) -> Signal:
        """A violation counts once it has lasted `for_s` (a brief spike of CPU is not an incident)."""
        if not rule.for_s:
            return signal
        first = self.since.setdefault(key, ts)
        if ts - first < rule.for_s:
            return HOLD
        return Signal(signal.severity, bound=signal.bound, detail=f"{signal.detail} for {ts - first:.0f} s")


class Rate(_KeyedDetector):
    """Largest allowed change per second, measured against an anchor at least `min_interval_s` older."""

    type = "rate"
    _history = ("anchor",)

    def __init__(self):
        self.anchor: dict[Key, tuple[float, float]] = {}  # key -> (value, ts)

    def evaluate(self, key: Key, value: float, ts: float, rule: RateRule | None) -> Signal | None:
        if rule is None:
            return CLEAR
        prev = self.anchor.get(key)
        if prev is None:
            self.anchor[key] = (value, ts)
            return None
        dt = ts - prev[1]
        if dt < rule.min_interval_s:
            return None  # too close to the anchor (or out of order): a rate over a sliver of time is noise
        self.anchor[key] = (value, ts)
        change = value - prev[0]
        rate = abs(change) / dt
        level = _level(rate, rule.warning, rule.critical)
        if level is not None:
            limit = rule.critical if level == "critical" else rule.warning
            return Signal(level, bound=limit, detail=f"changed by {change:+.4g} in {dt:.4g} s ({rate:.4g}/s), "
                                                     f"above the {level} limit {limit:g}/s")
        limit = rule.warning if rule.warning is not None else rule.critical
        if limit is None or rate <= limit - rule.deadband:
            return CLEAR
        return HOLD


class Outlier(_KeyedDetector):
    """z-score against an exponentially weighted mean and deviation; silent for the first `min_samples`."""

    type = "outlier"
    _history = ("state",)

    def __init__(self):
        self.state: dict[Key, tuple[int, float, float]] = {}  # key -> (samples, mean, variance)

    def evaluate(self, key: Key, value: float, ts: float, rule: OutlierRule | None) -> Signal | None:
        if rule is None:
            return CLEAR
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
        self.run: dict[Key, tuple[float, float, int]] = {}  # key -> (first value, first ts, readings)

    def evaluate(self, key: Key, value: float, ts: float, rule: StuckRule | None) -> Signal | None:
        if rule is None or (rule.count == 0 and rule.seconds == 0):
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
