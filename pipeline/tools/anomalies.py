"""Labelled anomalies for the simulated fleet, pure: when each sensor misbehaves, how, and the ground truth.

One planner per sensor decides, as its readings' times go by, when the next anomaly starts (an exponential
gap at `per_hour` anomalies per sensor-hour, after a warm-up and a settling time after the previous one, so
at most one anomaly per sensor at a time), which kind and which metric, and what it does to each reading:

  spike         one reading far from the expected value (1-1.5x the metric's spike offset)
  step          a lasting level shift of 15-25 noise sd, for 5-20 min, then back
  drift         a triangle: away by 20-40 noise sd and back, over 20-60 min (slow, like a sensor ageing)
  stuck         the value at the start repeated exactly, 5-10 min (a frozen sensor or firmware)
  out_of_range  a physically impossible value (10-50 beyond the sensor's range) for 10-60 s
  dropout       the sensor sends nothing at all, 400-900 s (longer than the default offline_after_s 300)

Every anomaly becomes one ground-truth record: sensor, metric (None for dropout: the whole sensor), kind,
start and end (epoch seconds of event time; a spike's end is its start).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import orjson

KINDS = ("spike", "step", "drift", "stuck", "out_of_range", "dropout")
# Seconds an anomaly lasts, (shortest, longest); the evaluation shortens dropouts with a shorter offline limit.
DURATIONS: dict[str, tuple[float, float]] = {
    "spike": (0.0, 0.0), "step": (300.0, 1200.0), "drift": (1200.0, 3600.0), "stuck": (300.0, 600.0),
    "out_of_range": (10.0, 60.0), "dropout": (400.0, 900.0)}
WARMUP_S = 600.0   # no anomaly before the detectors have their history (outlier: 30 readings, rate: a window)
SETTLE_S = 1800.0  # quiet after an anomaly: its alerts resolve, and a new one is not folded by the flap rule (1800 s)


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One injected anomaly: the ground truth, plus how it changes readings (`size` in noise sd or units)."""

    sensor: str
    metric: str | None
    kind: str
    start: float
    end: float
    sign: float = 1.0
    size: float = 0.0

    def truth(self) -> dict:
        """The ground-truth record (what the evaluation matches alerts against)."""
        return {"sensor": self.sensor, "metric": self.metric, "kind": self.kind,
                "start": round(self.start, 3), "end": round(self.end, 3)}

    def truth_line(self) -> bytes:
        """The record as one JSON line."""
        return orjson.dumps(self.truth()) + b"\n"

    def covers(self, t: float) -> bool:
        return self.start <= t <= self.end


def read_truth(lines: Sequence[bytes | str]) -> list[dict]:
    """Ground-truth records from JSON lines (blank lines skipped)."""
    return [orjson.loads(line) for line in lines if line.strip()]


@dataclass(frozen=True, slots=True)
class Plan:
    """How often and which anomalies: per sensor-hour rate, kinds, and the quiet times around them."""

    per_hour: float = 0.0
    kinds: tuple[str, ...] = KINDS
    warmup_s: float = WARMUP_S
    settle_s: float = SETTLE_S
    durations: tuple[tuple[str, float, float], ...] = ()  # (kind, shortest, longest) replacing DURATIONS

    def duration_range(self, kind: str) -> tuple[float, float]:
        for k, lo, hi in self.durations:
            if k == kind:
                return lo, hi
        return DURATIONS[kind]


class AnomalyPlanner:
    """One sensor's anomalies over time. Feed it the times of the sensor's readings in order."""

    def __init__(self, plan: Plan, sensor: str, metrics: Sequence[str], rng: random.Random):
        unknown = set(plan.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown anomaly kinds {sorted(unknown)}; choose from {','.join(KINDS)}")
        self.plan, self.sensor, self.metrics, self.rng = plan, sensor, list(metrics), rng
        self.current: Anomaly | None = None
        self.next_start: float | None = None
        self.frozen: dict[str, float] = {}  # stuck: metric -> the value repeated
        self.started: list[Anomaly] = []    # anomalies begun since the caller last took them

    def _gap(self) -> float:
        return self.rng.expovariate(self.plan.per_hour / 3600.0)

    def at(self, t: float) -> Anomaly | None:
        """The anomaly in force at time t, if any (starting one when it is due)."""
        plan = self.plan
        if plan.per_hour <= 0 or not plan.kinds:
            return None
        if self.next_start is None:
            self.next_start = t + plan.warmup_s + self._gap()
        cur = self.current
        if cur is not None and t > cur.end:
            self.current, self.frozen = None, {}
            self.next_start = cur.end + plan.settle_s + self._gap()
            cur = None
        if cur is None and t >= self.next_start:
            cur = self.current = self._begin(t)
            self.started.append(cur)
        return cur if cur is not None and cur.covers(t) else None

    def _begin(self, t: float) -> Anomaly:
        r = self.rng
        kind = r.choice(self.plan.kinds)
        lo, hi = self.plan.duration_range(kind)
        metric = None if kind == "dropout" else r.choice(self.metrics)
        sign = r.choice((-1.0, 1.0))
        size = {"spike": r.uniform(1.0, 1.5), "step": r.uniform(15.0, 25.0), "drift": r.uniform(20.0, 40.0),
                "out_of_range": r.uniform(10.0, 50.0)}.get(kind, 0.0)
        return Anomaly(self.sensor, metric, kind, t, t + r.uniform(lo, hi), sign, size)

    def take_started(self) -> list[Anomaly]:
        """The anomalies begun since the last call (to write their ground truth)."""
        out, self.started = self.started, []
        return out


def apply(anomaly: Anomaly, metric: str, t: float, value: float, profile, frozen: dict[str, float]) -> float:
    """The reading `value` of `metric` at t as the anomaly makes it (unchanged for another metric).
    `profile` is the metric's MetricProfile (noise sd, spike offset, physical range); `frozen` keeps
    the stuck value per metric for the anomaly's length."""
    if anomaly.metric != metric:
        return value
    kind, p = anomaly.kind, profile
    if kind == "spike":
        return min(p.high, max(p.low, value + anomaly.sign * anomaly.size * p.spike_offset))
    if kind == "step":
        return value + anomaly.sign * anomaly.size * p.noise_sd
    if kind == "drift":
        length = anomaly.end - anomaly.start
        phase = (t - anomaly.start) / length if length > 0 else 0.0
        return value + anomaly.sign * anomaly.size * p.noise_sd * (1.0 - abs(2.0 * phase - 1.0))
    if kind == "stuck":
        return frozen.setdefault(metric, value)
    if kind == "out_of_range":
        return p.high + anomaly.size if anomaly.sign > 0 else p.low - anomaly.size
    return value
