"""A series' detectors as one call per reading: `judge(key, value, ts, s, alerting) -> verdicts or None`.

The verdicts are the detectors' own, in detector order, returned when the book must hear some of them (the series
has an open alert, or a verdict carries a severity); None in the healthy case, where nothing is to be told.

For the pipeline's own detectors (threshold, rate, outlier, stuck, and no plug-in), `builtin_plan` judges the
healthy case of each in one frame, its settings in closure variables: a call per detector and the evaluator's loop
over them, per reading, were much of the cost. A fast path only decides what the detector would. Its guard is checked
before any state is touched, and what it does not admit (a first reading, a resend, a repeat, a score near or
beyond a limit) goes to the detector's own `judge`, which then starts from the same state. The rate window moves
in `rate.take` either way; only its verdict on a slope past the clear bound is the detector's (`Rate.verdict`).
Any other set of detectors gets `generic_plan`: each `judge` in turn, as before.
"""
from __future__ import annotations

import math
import struct
from array import array
from typing import Callable

from .detectors import (_KEEP, CLEAR, OUT_MEAN, OUT_N, OUT_VAR, RUN_LAST, RUN_N, RUN_RATE, RUN_SINCE, RUN_VALUE,
                        Outlier, SeriesDetector, Stuck, Threshold)
from .rate import POINTS, Rate, take

Judge = Callable[[tuple, float, float, "array | None", bool], "tuple | None"]
_INF = math.inf
# The outlier's statistics (OUT_N, OUT_MEAN, OUT_VAR) and the stuck run (RUN_VALUE, RUN_SINCE, RUN_N, RUN_RATE,
# RUN_LAST) read and written through the array's buffer at once: a subscript converts each double on its own.
_BYTES = array("d").itemsize
_STATS, _STATS_AT = struct.Struct("3d"), OUT_N * _BYTES
_RUN, _RUN_AT = struct.Struct("5d"), RUN_VALUE * _BYTES
assert (OUT_MEAN, OUT_VAR) == (OUT_N + 1, OUT_N + 2) and (RUN_SINCE, RUN_N, RUN_RATE, RUN_LAST) == tuple(
    range(RUN_VALUE + 1, RUN_VALUE + 5)), "the places read at once must be consecutive"


def plan_for(detectors: tuple, rules: tuple) -> Judge:
    """The one call judging a reading of a series with these settings (a MetricRules' `rules`)."""
    if tuple(map(type, detectors)) == (Threshold, Rate, Outlier, Stuck):
        return builtin_plan(*detectors, rules)
    return generic_plan(detectors, rules)


def _calls(detectors: tuple, rules: tuple) -> list[tuple[Callable, object]]:
    """(judge, prepared rule) of each detector: `off` when it is not configured."""
    calls = []
    for det, rule in zip(detectors, rules):
        if rule is None:
            calls.append((det.off, None))
        elif type(det).judge is SeriesDetector.judge:  # a plug-in's `_judge`: `evaluate` finds its history
            calls.append((det.evaluate, rule))  # when the series has no array (its spec keeps none)
        else:
            calls.append((det.judge, det.prepare(rule)))
    return calls


def generic_plan(detectors: tuple, rules: tuple) -> Judge:
    """Each detector's `judge` in turn."""
    calls = _calls(detectors, rules)

    def judge(key, value, ts, s, alerting):
        verdicts = tuple([call(key, value, ts, rule, s) for call, rule in calls])
        if alerting or any(v is not None and v.severity is not None for v in verdicts):
            return verdicts
        return None
    return judge


def _clear_below(warning: float | None, critical: float | None, deadband: float) -> float:
    """The largest score a detector of warning/critical limits answers CLEAR for: neither limit crossed and back
    inside the first of them (warning, else critical) by the deadband. For a score x that is not NaN,
    `x <= _clear_below(...)` is exactly the detector's CLEAR condition (x <= critical, x <= warning,
    x <= limit - deadband); NaN fails it and goes to the detector itself."""
    limit = warning if warning is not None else critical
    if limit is None:
        return _INF  # no limit: every verdict is CLEAR
    return min(x for x in (warning, critical, limit - deadband) if x is not None)


def builtin_plan(threshold: Threshold, rate: Rate, outlier: Outlier, stuck: Stuck, rules: tuple) -> Judge:
    """Threshold, rate, outlier and stuck judged in one call; each one's healthy case inline (module doc)."""
    t_rule, r_rule, o_rule, k_rule = rules
    t_prepared = threshold.prepare(t_rule) if t_rule is not None else None
    t_low, t_high = (t_prepared[2], t_prepared[3]) if t_rule is not None else (0.0, 0.0)
    history = outlier.history  # every detector's fixed places; the rate window starts after them
    b = rate.history
    start = b + POINTS
    if r_rule is not None:
        r_clear = _clear_below(r_rule.warning, r_rule.critical, r_rule.deadband)
    if o_rule is not None:
        o_samples, o_min_std, o_alpha = o_rule.min_samples, o_rule.min_std, o_rule.alpha
        o_keep = 1 - o_alpha
        o_clear = _clear_below(o_rule.z_warning, o_rule.z_critical, o_rule.deadband)
    k_off = k_rule is None or not (k_rule.count or k_rule.seconds or k_rule.repeat_chance)
    if not k_off:
        k_tolerance, k_min_count, k_chance = k_rule.tolerance, k_rule.min_count, k_rule.repeat_chance
    isfinite, sqrt = math.isfinite, math.sqrt

    def judge(key, value, ts, s, alerting):
        loud = False  # a verdict with a severity: the book must hear this reading

        # threshold: inside every bound by the deadband (or off) is CLEAR, as Threshold.judge decides first
        if t_rule is None or t_low <= value <= t_high:
            v_threshold = CLEAR
            if threshold.since:
                threshold.since.pop(key, None)
        else:
            v_threshold = threshold.judge(key, value, ts, t_prepared, s)
            loud = v_threshold.severity is not None

        # rate: the next reading of a window (Rate.judge without its first-reading and out-of-order cases)
        if r_rule is None:
            v_rate = CLEAR
            if rate.since:
                rate.since.pop(key, None)
        elif len(s) <= start or ts <= s[-2]:  # a first reading, or one out of order
            v_rate = rate.judge(key, value, ts, r_rule, s)
            loud = loud or (v_rate is not None and v_rate.severity is not None)
        else:
            slope = take(s, b, ts, value, r_rule)
            if slope is None:
                v_rate = None
            elif abs(slope) <= r_clear:
                v_rate = CLEAR
                if rate.since:
                    rate.since.pop(key, None)
            else:
                v_rate = rate.verdict(key, slope, ts, r_rule, s)
                loud = loud or v_rate.severity is not None

        # outlier: a z-score inside the clear limit, or still warming up; the statistics move as in Outlier.judge
        if o_rule is None:
            v_outlier = CLEAR
            if outlier.since:
                outlier.since.pop(key, None)
        else:
            v_outlier, near = None, len(s) < history
            if not near:
                n, mean, var = _STATS.unpack_from(s, _STATS_AT)
                near = not n  # the first reading: the detector starts the statistics (no verdict)
            if not near and n >= o_samples:
                std = sqrt(var)
                if std < o_min_std:
                    std = o_min_std
                if std > 0:
                    if abs(value - mean) / std <= o_clear:
                        v_outlier = CLEAR
                    else:
                        near = True
            if near:  # the detector itself, from the untouched state
                v_outlier = outlier.judge(key, value, ts, o_rule, s)
                loud = loud or (v_outlier is not None and v_outlier.severity is not None)
            else:
                diff = value - mean
                incr = o_alpha * diff
                mean, var = mean + incr, o_keep * (var + diff * incr)
                if isfinite(var) and isfinite(mean):
                    _STATS.pack_into(s, _STATS_AT, n + 1, mean, var)
                else:
                    _STATS.pack_into(s, _STATS_AT, 1.0, value, 0.0)
                if v_outlier is not None and outlier.since:
                    outlier.since.pop(key, None)

        # stuck: a new value starts a new run; the repeat rate learned as in Stuck.judge while no learned limit
        # can have judged the run that ends (shorter than min_count, or no learned limit)
        if k_off:
            v_stuck = CLEAR
            if stuck.since:
                stuck.since.pop(key, None)
        else:
            near = len(s) < history  # no run yet
            if not near:
                first, _since, run, learned, last = _RUN.unpack_from(s, _RUN_AT)
                # a first reading, a resend, a repeat, or the end of a run a learned limit may have judged
                near = not run or ts <= last or abs(value - first) <= k_tolerance or (k_chance and run >= k_min_count)
            if near:  # the detector itself
                v_stuck = stuck.judge(key, value, ts, k_rule, s)
                loud = loud or (v_stuck is not None and v_stuck.severity is not None)
            else:
                kept = 1.0 if run == 1.0 else _KEEP ** (int(run) - 1)  # the usual run of one: _KEEP ** 0 is 1.0
                _RUN.pack_into(s, _RUN_AT, value, ts, 1.0, _KEEP * (1.0 - kept * (1.0 - learned)), ts)
                v_stuck = CLEAR
                if stuck.since:
                    stuck.since.pop(key, None)

        if alerting or loud:
            return v_threshold, v_rate, v_outlier, v_stuck
        return None
    return judge
