"""The detectors. Each is a small pure class: `judge(key, value, ts, rule, series) -> Signal | None`.

A Signal says what the reading means for the alert of that (sensor, metric, detector):
  severity set        the alert condition holds at that severity (open, or escalate if worse)
  CLEAR               back inside the bound by the deadband: counts towards resolving an open alert
  HOLD                neither: inside the deadband zone, or the condition has not yet held for the rule's
                      `for_s`; an open alert stays open, the clear streak restarts
  None                no opinion (warming up, rate window not yet full, out of order): changes nothing
A detector whose rule is None (not configured) answers CLEAR, so an alert it opened before a reload
turned it off still resolves.

The history of a (sensor, metric) series (EWMA, stuck run, rate window) is one array of doubles that the
caller owns and hands in with each reading (`new_series`, the layout below): one object per series for every
detector, no dict entry, tuple or float object per detector (limits.state_idle_s, memory per series in
README). Called without one, a detector keeps its own per key (`series`). Only when a condition began
(`since`, while it holds under a `for_s`) is kept by the detector itself, per key: few series at a time.
"""
from __future__ import annotations

import functools
import math
from array import array
from dataclasses import dataclass

from ...config import OutlierRule, StuckRule, ThresholdRule
from ...registry import detectors as registry
from ..logcounts.counting import APP_SENSOR_TYPE

Key = tuple[str, str]

# A series' array: [SEEN] alone until a detector with history judges it; then every detector's fixed places, as
# the registry lays them out (pipeline/registry/detectors.py: the outlier's, the stuck run's, then plug-ins'; zero:
# no history yet); the rate window's sums and readings after them (rate.py). The places below are the built-ins',
# which come first whatever plug-ins register; HISTORY is the fixed part without plug-ins.
SEEN = 0  # wall clock of the series' latest reading (the evaluator's idle sweep)
OUT_N, OUT_MEAN, OUT_VAR = 1, 2, 3  # outlier: readings in the statistics (0: none yet), EWMA mean and variance
RUN_VALUE, RUN_SINCE, RUN_N = 4, 5, 6  # stuck: the run's first value and event time, its readings (0: no run)
RUN_RATE = 7  # stuck: the series' repeat rate learned from the runs before this one (StuckRule.repeat_chance)
RUN_LAST = 8  # stuck: event time of the run's latest reading
HISTORY = 9
_NO_HISTORY = array("d", bytes(8 * (HISTORY - 1)))


def new_series(now: float) -> array:
    """The array of a series first seen at wall clock `now`, without history."""
    return array("d", (now,))


def seen_at(s: float | array) -> float:
    """The wall clock of a series' latest reading: the float itself, or [SEEN] of its array."""
    return s[SEEN] if type(s) is array else s


def with_history(s: array) -> array:
    """`s` with the outlier's and stuck run's places (added once, empty)."""
    if len(s) < HISTORY:
        s.extend(_NO_HISTORY)
    return s


@dataclass(frozen=True, slots=True)
class Signal:
    """What one reading means for one detector's alert; `detail` completes the operator's sentence."""

    severity: str | None
    clear: bool = False
    bound: float | None = None
    detail: str = ""


CLEAR = Signal(None, clear=True)
HOLD = Signal(None, clear=False)


def level_above(value: float, warning: float | None, critical: float | None) -> str | None:
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


class SeriesDetector:
    """Judges a reading with the history of its series; remembers per key when a condition began.

    A detector judges one reading in `judge` (the evaluator's one call per detector and reading, with the rule
    as `prepare` derived it), or a plug-in in `_judge`, which the shared `judge` wraps. A verdict with a
    severity counts only once the condition has held for the rule's `for_s` seconds of event time (one hold
    rule for every detector, `_held`). Until then the answer is HOLD, so an open alert stays open but no new
    one opens. `evaluate` takes a reading alone (tests, tools): the rule as configured, None when off."""

    keeps_history = True  # judges with the history of the series (an array is needed)
    history = HISTORY  # length of the array's fixed places (the registry's layout sets it when plug-ins add some)
    _no_history = _NO_HISTORY

    def placed(self, offset: int, history: int, expected: int | None = None) -> "SeriesDetector":
        """This detector in the registry's layout: its places start at `offset`, the fixed part ends at
        `history`. A built-in whose places are constants checks they are where the registry put them."""
        if expected is not None and offset != expected:
            raise RuntimeError(f"detector {self.type}: slots laid out at {offset}, its code uses {expected}")
        self.offset = offset
        if history != self.history:
            self.history, self._no_history = history, array("d", bytes(8 * (history - 1)))
        return self

    def with_history(self, s: array) -> array:
        """`s` with every detector's fixed places (added once, empty)."""
        if len(s) < self.history:
            s.extend(self._no_history)
        return s

    def __init__(self):
        self.since: dict[Key, float] = {}  # key -> event time the condition first held (and kept holding)
        self.series: dict[Key, array] = {}  # the history of keys judged without a series handed in

    def evaluate(self, key: Key, value: float, ts: float, rule, series: array | None = None) -> Signal | None:
        """What this reading means for the alert of `key` under `rule` (None: the detector is off); `series`:
        the history of `key` (new_series), updated in place (None: the detector keeps its own)."""
        if rule is None:
            return self.off(key, value, ts, rule, series)
        if series is None and self.keeps_history:
            series = self.series.get(key)
            if series is None:
                series = self.series[key] = new_series(0.0)
        return self.judge(key, value, ts, self.prepare(rule), series)

    def prepare(self, rule):
        """What `judge` takes for `rule`: derived once per rule by the evaluator (the rule itself by default)."""
        return rule

    def off(self, key: Key, value: float, ts: float, rule, s) -> Signal:
        """The verdict of a detector not configured for the series: CLEAR, so an alert it opened resolves."""
        if self.since:
            self.since.pop(key, None)
        return CLEAR

    def judge(self, key: Key, value: float, ts: float, rule, s: array | None) -> Signal | None:
        """One reading under a prepared rule, with the hold (`for_s`). The evaluator's per-reading call: the
        built-ins implement it whole (one call per detector and reading); a plug-in writes `_judge`."""
        signal = self._judge(s, value, ts, rule)
        if signal is None:
            return None  # no opinion: neither starts nor breaks a hold
        if signal.severity is None:
            if self.since:
                self.since.pop(key, None)
            return signal
        return self._held(key, signal, ts, rule) if rule.for_s else signal

    def _held(self, key: Key, signal: Signal, ts: float, rule) -> Signal:
        """A verdict with a severity under a `for_s`: HOLD until the condition has held that long."""
        first = self.since.setdefault(key, ts)
        if ts - first < rule.for_s:
            return HOLD
        return Signal(signal.severity, bound=signal.bound, detail=f"{signal.detail} for {ts - first:.0f} s")

    def _judge(self, s: array, value: float, ts: float, rule) -> Signal | None:
        raise NotImplementedError

    def forget_series(self, keys: set[Key]) -> None:
        """Drop what this detector keeps of these (sensor, metric) series (idle: limits.state_idle_s)."""
        for name in ("since", "series"):
            state = getattr(self, name)
            before = len(state)
            for key in keys:
                state.pop(key, None)
            if before - len(state) > len(state):  # a dict keeps its table when emptied: copied, it frees the memory
                setattr(self, name, dict(state))

    def forget(self, sensors: set[str]) -> None:
        """Drop what this detector keeps of these sensors (their partition went to another instance, or they went
        idle)."""
        for state in (self.since, self.series):
            for key in [k for k in state if k[0] in sensors]:
                del state[key]


class Threshold(SeriesDetector):
    """Warning and critical min/max bounds; clears inside the innermost bounds by the deadband."""

    type = "threshold"
    keeps_history = False

    def prepare(self, rule: ThresholdRule) -> tuple:
        return (rule, *_prepared(rule))

    def judge(self, key: Key, value: float, ts: float, prepared: tuple, s) -> Signal:
        rule, checks, clear_low, clear_high = prepared
        if clear_low <= value <= clear_high:  # inside every bound by the deadband: no bound can be crossed
            if self.since:
                self.since.pop(key, None)
            return CLEAR
        for level, high, low in checks:
            if high is not None and value > high:
                signal = Signal(level, bound=high, detail=f"above the {level} maximum {high:g}")
                return self._held(key, signal, ts, rule) if rule.for_s else signal
            if low is not None and value < low:
                signal = Signal(level, bound=low, detail=f"below the {level} minimum {low:g}")
                return self._held(key, signal, ts, rule) if rule.for_s else signal
        if self.since:
            self.since.pop(key, None)
        return HOLD


class Outlier(SeriesDetector):
    """z-score against an exponentially weighted mean and deviation; silent for the first `min_samples`."""

    type = "outlier"

    def judge(self, key: Key, value: float, ts: float, rule: OutlierRule, s: array) -> Signal | None:
        if len(s) < self.history:
            s.extend(self._no_history)
        n = s[OUT_N]
        if not n:
            s[OUT_N], s[OUT_MEAN], s[OUT_VAR] = 1.0, value, 0.0
            return None
        mean, var = s[OUT_MEAN], s[OUT_VAR]
        signal = None
        if n >= rule.min_samples:
            std = math.sqrt(var)
            if std < rule.min_std:
                std = rule.min_std
            if std > 0:
                z = abs(value - mean) / std
                zc, zw = rule.z_critical, rule.z_warning
                if zc is not None and z > zc:
                    signal = Signal("critical", bound=zc, detail=f"{z:.1f} standard deviations from its recent mean "
                                                                 f"{mean:.4g} (±{std:.3g}; critical at {zc:g})")
                elif zw is not None and z > zw:
                    signal = Signal("warning", bound=zw, detail=f"{z:.1f} standard deviations from its recent mean "
                                                                f"{mean:.4g} (±{std:.3g}; warning at {zw:g})")
                else:
                    limit = zw if zw is not None else zc
                    signal = CLEAR if limit is None or z <= limit - rule.deadband else HOLD
        # The reading joins the statistics after it was judged, outlier or not: a lasting level shift is
        # absorbed instead of alerting forever.
        alpha = rule.alpha
        diff = value - mean
        incr = alpha * diff
        mean, var = mean + incr, (1 - alpha) * (var + diff * incr)
        # Readings near the float limit (1e200 and more) can overflow the variance; an inf or NaN state
        # would silence the detector for good, so it starts over from this reading instead.
        if math.isfinite(var) and math.isfinite(mean):
            s[OUT_N], s[OUT_MEAN], s[OUT_VAR] = n + 1, mean, var
        else:
            s[OUT_N], s[OUT_MEAN], s[OUT_VAR] = 1.0, value, 0.0
        if signal is None:
            return None
        if signal.severity is None:
            if self.since:
                self.since.pop(key, None)
            return signal
        return self._held(key, signal, ts, rule) if rule.for_s else signal


# The learned stuck limit (StuckRule.repeat_chance). A new series is assumed to repeat its value 20 % of the
# time (so it needs about 13 repeats at a chance of 1e-7 until its own rate is known) and the estimate follows
# the series with a memory of about 200 readings: long enough that a quiet stretch does not make it
# overconfident, short enough that a sensor whose resolution or environment changes is relearned in minutes.
PRIOR_REPEAT_RATE = 0.2
REPEAT_LEARNING = 0.005
_RATE_FLOOR, _RATE_CEILING = 1e-6, 0.999
_CONTINUATION = math.sqrt(2.0)
_KEEP = 1.0 - REPEAT_LEARNING


def repeat_rate_after(rate: float, repeats: int) -> float:
    """The repeat-rate estimate (an EWMA of "the reading equals the previous one") after a run of `repeats`
    repeats ended by a change: `repeats` ones, then a zero, in closed form."""
    return _KEEP * (1.0 - _KEEP ** repeats * (1.0 - rate))


def repeats_unlikely_after(rate: float, chance: float) -> int:
    """The fewest repeats in a row whose chance on a series repeating at `rate` is at most `chance`.

    A run is not a string of independent repeats at the average rate: a value that repeated is likely near
    the series' level, where noise lands most often, so the next reading repeats it more often than average;
    for gaussian noise up to sqrt(2) times (the density at the mean over the mean density). The bound uses
    that worst case."""
    rate = min(max(rate * _CONTINUATION, _RATE_FLOOR), _RATE_CEILING)
    return max(1, math.ceil(math.log(chance) / math.log(rate) - 1e-9))


class Stuck(SeriesDetector):
    """The same value (within `tolerance` of the run's first) `count` times in a row, for `seconds`, or longer
    than the series' own repeats explain (`repeat_chance`, learned per series)."""

    type = "stuck"

    def judge(self, key: Key, value: float, ts: float, rule: StuckRule, s: array) -> Signal | None:
        if not (rule.count or rule.seconds or rule.repeat_chance):
            return self.off(key, value, ts, rule, s)
        if len(s) < self.history:
            s.extend(self._no_history)
        run = s[RUN_N]
        if run and ts <= s[RUN_LAST]:
            # A reading delivered again (a QoS 1 resend keeps its event time) or one older than the run is not a
            # repeat: counted, two resends would make a fine-grained sensor look frozen.
            return None
        if not run or abs(value - s[RUN_VALUE]) > rule.tolerance:
            rate = s[RUN_RATE] if run else PRIOR_REPEAT_RATE
            # A run that was judged stuck does not teach the series to repeat: a frozen sensor that comes back
            # is caught as fast the next time. (_learned_limit's first test inline: most runs are one reading.)
            if run and (not rule.repeat_chance or run < rule.min_count or _learned_limit(int(run), rate, rule) is None):
                rate = _KEEP * (1.0 - _KEEP ** (int(run) - 1) * (1.0 - rate))  # repeat_rate_after, inline
            s[RUN_VALUE], s[RUN_SINCE], s[RUN_N], s[RUN_RATE], s[RUN_LAST] = value, ts, 1.0, rate, ts
            if self.since:
                self.since.pop(key, None)
            return CLEAR
        n = int(run) + 1
        s[RUN_N], s[RUN_LAST] = n, ts
        first, lasted = s[RUN_VALUE], ts - s[RUN_SINCE]
        if rule.count and n >= rule.count:
            limit = f"limit {rule.count} readings"
        elif rule.seconds and lasted >= rule.seconds:
            limit = f"limit {rule.seconds:g} s"
        else:
            limit = _learned_limit(n, s[RUN_RATE], rule)
            if limit is None:
                if self.since:
                    self.since.pop(key, None)
                return CLEAR
        signal = Signal(rule.severity, detail=f"has reported {first:g} {n} times in a row over {lasted:.0f} s ({limit})")
        return self._held(key, signal, ts, rule) if rule.for_s else signal


def _learned_limit(n: int, rate: float, rule: StuckRule) -> str | None:
    """Why a run of `n` readings is stuck under the learned limit, or None when it is not (yet)."""
    if not rule.repeat_chance or n < rule.min_count or n - 1 < repeats_unlikely_after(rate, rule.repeat_chance):
        return None
    return (f"it repeats a reading {rate:.1%} of the time: {n - 1} repeats happen by chance "
            f"less than once in {1 / rule.repeat_chance:,.0f} readings")


registry.register(registry.DetectorSpec(
    "threshold", ThresholdRule, lambda offset, history: Threshold().placed(offset, history), value_first=True, order=10,
    doc="warning and critical min/max bounds (config `thresholds`, per sensor `threshold`)"))
registry.register(registry.DetectorSpec(
    "outlier", OutlierRule, lambda offset, history: Outlier().placed(offset, history, OUT_N),
    slots=RUN_VALUE - OUT_N, history=True, value_first=True, order=30, doc="z-score against an EWMA"))
registry.register(registry.DetectorSpec(
    "stuck", StuckRule, lambda offset, history: Stuck().placed(offset, history, RUN_VALUE),
    slots=HISTORY - RUN_VALUE, history=True, order=40, doc="the same value too many times in a row"))


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
