"""The alert evaluator as it was before readings were judged per series: one reading at a time, each detector's
verdict computed as it was then (`evaluate` → `_judge`, with the rate window's `_add`). Kept as the reference
the batched evaluator (pipeline/operators/alerts/evaluator.py) must match call for call: test_batched_evaluation.
"""
from __future__ import annotations

import math
import sys
from array import array

from pipeline.operators.alerts import detectors as live
from pipeline.operators.alerts import rate as live_rate
from pipeline.operators.alerts.detectors import (CLEAR, HOLD, OUT_MEAN, OUT_N, OUT_VAR, RUN_LAST, RUN_N, RUN_RATE,
                                                 RUN_SINCE, RUN_VALUE, SEEN, PRIOR_REPEAT_RATE, Signal, level_above,
                                                 new_series, offline_tracked, repeat_rate_after, _learned_limit,
                                                 _prepared)
from pipeline.operators.alerts.evaluator import AlertEvaluator
from pipeline.operators.alerts.rate import POINTS, STV, ST, STT, SV, _rebase, count, window_slope


class Reference:
    """The previous `SeriesDetector.evaluate`, around the previous verdicts (`_judge`)."""

    def evaluate(self, key, value, ts, rule, series=None):
        if rule is None:
            self.since.pop(key, None)
            return CLEAR
        if series is None and self.keeps_history:
            series = self.series.get(key)
            if series is None:
                series = self.series[key] = new_series(0.0)
        signal = self._judge(series, value, ts, rule)
        if signal is None:
            return None
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


class Threshold(Reference, live.Threshold):
    def _judge(self, s, value, ts, rule):
        checks, clear_low, clear_high = _prepared(rule)
        for level, high, low in checks:
            if high is not None and value > high:
                return Signal(level, bound=high, detail=f"above the {level} maximum {high:g}")
            if low is not None and value < low:
                return Signal(level, bound=low, detail=f"below the {level} minimum {low:g}")
        return CLEAR if clear_low <= value <= clear_high else HOLD


class Outlier(Reference, live.Outlier):
    def _judge(self, s, value, ts, rule):
        self.with_history(s)
        n = s[OUT_N]
        if not n:
            s[OUT_N], s[OUT_MEAN], s[OUT_VAR] = 1.0, value, 0.0
            return None
        mean, var = s[OUT_MEAN], s[OUT_VAR]
        signal = None
        std = max(math.sqrt(var), rule.min_std)
        if n >= rule.min_samples and std > 0:
            z = abs(value - mean) / std
            level = level_above(z, rule.z_warning, rule.z_critical)
            if level is not None:
                limit = rule.z_critical if level == "critical" else rule.z_warning
                signal = Signal(level, bound=limit, detail=f"{z:.1f} standard deviations from its recent mean {mean:.4g} "
                                                           f"(±{std:.3g}; {level} at {limit:g})")
            else:
                limit = rule.z_warning if rule.z_warning is not None else rule.z_critical
                signal = CLEAR if limit is None or z <= limit - rule.deadband else HOLD
        diff = value - mean
        incr = rule.alpha * diff
        mean, var = mean + incr, (1 - rule.alpha) * (var + diff * incr)
        if math.isfinite(var) and math.isfinite(mean):
            s[OUT_N], s[OUT_MEAN], s[OUT_VAR] = n + 1, mean, var
        else:
            s[OUT_N], s[OUT_MEAN], s[OUT_VAR] = 1.0, value, 0.0
        return signal


class Stuck(Reference, live.Stuck):
    def _judge(self, s, value, ts, rule):
        if not (rule.count or rule.seconds or rule.repeat_chance):
            return CLEAR
        self.with_history(s)
        if s[RUN_N] and ts <= s[RUN_LAST]:
            return None
        if not s[RUN_N] or abs(value - s[RUN_VALUE]) > rule.tolerance:
            rate = s[RUN_RATE] if s[RUN_N] else PRIOR_REPEAT_RATE
            if s[RUN_N] and _learned_limit(int(s[RUN_N]), rate, rule) is None:
                rate = repeat_rate_after(rate, int(s[RUN_N]) - 1)
            s[RUN_VALUE], s[RUN_SINCE], s[RUN_N], s[RUN_RATE], s[RUN_LAST] = value, ts, 1.0, rate, ts
            return CLEAR
        n = int(s[RUN_N]) + 1
        s[RUN_N], s[RUN_LAST] = n, ts
        first, lasted = s[RUN_VALUE], ts - s[RUN_SINCE]
        if rule.count and n >= rule.count:
            limit = f"limit {rule.count} readings"
        elif rule.seconds and lasted >= rule.seconds:
            limit = f"limit {rule.seconds:g} s"
        else:
            limit = _learned_limit(n, s[RUN_RATE], rule)
            if limit is None:
                return CLEAR
        return Signal(rule.severity, detail=f"has reported {first:g} {n} times in a row over {lasted:.0f} s ({limit})")


def _sub(s, b, ts, value):
    t, v = ts - s[b], value - s[b + 1]
    s[b + ST] -= t
    s[b + SV] -= v
    s[b + STT] -= t * t
    s[b + STV] -= t * v


def _add(s, b, ts, value, window_s, max_samples):
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


class Rate(Reference, live_rate.Rate):
    def _judge(self, s, value, ts, rule):
        b = self.history
        start = b + POINTS
        if len(s) < start:
            self.with_history(s)
            s.extend((ts, value, 0.0, 0.0, 0.0, 0.0))
        elif len(s) > start and ts <= s[-2]:
            return None
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


OLD = {"threshold": Threshold, "outlier": Outlier, "stuck": Stuck, "rate": Rate}


class ReferenceEvaluator(AlertEvaluator):
    """The evaluator with the previous detectors and the previous per-reading `evaluate`; the rest shared."""

    def __init__(self, settings):
        super().__init__(settings)
        self.detectors = tuple(OLD[d.type]().placed(d.offset, d.history)
                               for d in self.detectors)

    def evaluate(self, readings, now):
        rules, book = self.rules, self.book
        out = []
        alerting = {(k[0], k[1]) for k in book.open}
        detectors, timer, series = self.detectors, self.offline_timer, self.series
        for r in readings:
            sensor_id, metric = r.sensor_id, r.metric
            if offline_tracked(r.sensor_type):
                timer.seen(sensor_id, now)
            self.sensor_info[sensor_id] = (r.sensor_type, r.location)
            if (sensor_id, None) in alerting:
                self._add(out, book.resolve((sensor_id, None, "offline"), r.ts), r.sensor_type, r.location)
            mr = rules.for_metric(sensor_id, metric)
            key = (sensor_id, metric)
            s = series.get(key)
            if s is None:
                key = (sensor_id, sys.intern(metric))
            if type(s) is array:
                s[SEEN] = now
            elif not mr.history:
                series[key], s = now, None
            else:
                s = series[key] = new_series(now)
            is_alerting = key in alerting
            for detector, rule in zip(detectors, mr.rules):
                signal = detector.evaluate(key, r.value, r.ts, rule, s)
                if signal is not None and (is_alerting or signal.severity is not None):
                    t = book.observe(sensor_id, metric, detector.type, signal, r.ts, r.value)
                    if t is not None:
                        self._add(out, t, r.sensor_type, r.location)
                        alerting.add(key)
                        is_alerting = True
        return out
