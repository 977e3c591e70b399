"""The evaluation's scoring, pure: alerts and ground truth in, precision, recall, delays and false alerts out.

Matching rule: an alert matches an injected anomaly when it is about the same sensor, the same metric where
both name one (an `offline` alert has no metric and a dropout covers the whole sensor, so either side
without a metric matches any metric of the sensor), and it opened within [start, end + tolerance_s]. An
alert matching no anomaly is a false alert. An anomaly is caught by a detector when at least one alert of
that detector matches it; its delay is the first such alert's opening time minus the anomaly's start.
Anomalies at the same sensor never overlap (the planner runs one at a time), so an alert matches at most
one; should two windows overlap, the anomaly that started last before the alert wins.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

ANY = "any"  # pseudo-detector: caught by whichever detector first


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert as stored: who, what, which detector, when it opened (epoch seconds)."""

    sensor: str
    metric: str | None
    detector: str
    opened_at: float


@dataclass(frozen=True, slots=True)
class Truth:
    """One injected anomaly (a ground-truth line)."""

    sensor: str
    metric: str | None
    kind: str
    start: float
    end: float

    @classmethod
    def from_record(cls, r: dict) -> "Truth":
        return cls(r["sensor"], r.get("metric"), r["kind"], float(r["start"]), float(r["end"]))


def matches(alert: Alert, truth: Truth, tolerance_s: float) -> bool:
    """The matching rule (module docstring)."""
    if alert.sensor != truth.sensor:
        return False
    if alert.metric is not None and truth.metric is not None and alert.metric != truth.metric:
        return False
    return truth.start <= alert.opened_at <= truth.end + tolerance_s


def match(alerts: Sequence[Alert], truths: Sequence[Truth], tolerance_s: float) -> list[int | None]:
    """For each alert, the index of the anomaly it matches (None: a false alert)."""
    by_sensor: dict[str, list[int]] = {}
    for i, t in enumerate(truths):
        by_sensor.setdefault(t.sensor, []).append(i)
    out: list[int | None] = []
    for a in alerts:
        found = [i for i in by_sensor.get(a.sensor, ()) if matches(a, truths[i], tolerance_s)]
        out.append(max(found, key=lambda i: truths[i].start) if found else None)
    return out


def censor(alerts: Sequence[Alert], truths: Sequence[Truth], horizon: float, tolerance_s: float,
           late_alerts: bool = False) -> tuple[list[Alert], list[Truth]]:
    """Cut a run at `horizon` (when its data ends): anomalies still going on then are left out, with the
    alerts that match them. Alerts opened after the horizon are left out too unless `late_alerts` (in real
    time every sensor goes silent when the run ends, and goes offline after the limit; in a replay an alert
    stamped later is a wall-clock one, and counts)."""
    cut = [t for t in truths if t.end > horizon]
    kept_truths = [t for t in truths if t.end <= horizon]
    kept_alerts = [a for a in alerts if (late_alerts or a.opened_at <= horizon)
                   and not any(matches(a, t, tolerance_s) for t in cut)]
    return kept_alerts, kept_truths


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100.0 * len(ordered)) - 1)]


def normal_hours(sensor_hours: float, truths: Iterable[Truth], tolerance_s: float) -> float:
    """Sensor-hours of normal data: the whole run less each anomaly's matching window on its sensor."""
    return max(0.0, sensor_hours - sum((t.end + tolerance_s - t.start) / 3600.0 for t in truths))


def score(alerts: Sequence[Alert], truths: Sequence[Truth], sensor_hours: float, tolerance_s: float) -> dict:
    """Per anomaly kind and detector: caught, recall, delay median and p95; per detector: alerts, matched,
    precision, false alerts and false alerts per 100 sensor-hours of normal data."""
    matched = match(alerts, truths, tolerance_s)
    detectors = sorted({a.detector for a in alerts})
    first: dict[tuple[int, str], float] = {}  # (truth index, detector or ANY) -> earliest matching opening
    for a, i in zip(alerts, matched):
        if i is None:
            continue
        for d in (a.detector, ANY):
            key = (i, d)
            if key not in first or a.opened_at < first[key]:
                first[key] = a.opened_at
    kinds: dict[str, dict] = {}
    for kind in sorted({t.kind for t in truths}):
        idx = [i for i, t in enumerate(truths) if t.kind == kind]
        rows = {}
        for d in [ANY] + detectors:
            delays = [first[i, d] - truths[i].start for i in idx if (i, d) in first]
            rows[d] = {"caught": len(delays), "recall": len(delays) / len(idx),
                       "delay_median_s": _round(percentile(delays, 50)), "delay_p95_s": _round(percentile(delays, 95))}
        kinds[kind] = {"count": len(idx), "by": rows}
    hours = normal_hours(sensor_hours, truths, tolerance_s)
    per_detector = {}
    for d in detectors:
        mine = [i for a, i in zip(alerts, matched) if a.detector == d]
        false = sum(1 for i in mine if i is None)
        per_detector[d] = {"alerts": len(mine), "matched": len(mine) - false,
                           "precision": (len(mine) - false) / len(mine) if mine else None,
                           "false": false, "false_per_100h": _rate(false, hours)}
    false_total = sum(1 for i in matched if i is None)
    return {"alerts": len(alerts), "anomalies": len(truths), "sensor_hours": round(sensor_hours, 3),
            "normal_sensor_hours": round(hours, 3), "tolerance_s": tolerance_s, "false_alerts": false_total,
            "false_per_100h": _rate(false_total, hours),
            "precision": (len(alerts) - false_total) / len(alerts) if alerts else None,
            "kinds": kinds, "detectors": per_detector}


def _rate(count: int, hours: float) -> float | None:
    return round(100.0 * count / hours, 3) if hours > 0 else None


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def merge(*parts: tuple[Sequence[Alert], Sequence[Truth], float]) -> tuple[list[Alert], list[Truth], float]:
    """Runs scored together: their alerts, their anomalies, their sensor-hours summed."""
    alerts = [a for p in parts for a in p[0]]
    truths = [t for p in parts for t in p[1]]
    return alerts, truths, sum(p[2] for p in parts)


@dataclass(frozen=True, slots=True)
class Target:
    """One of the issue's targets, as measured."""

    name: str
    limit: str
    measured: str
    met: bool


RECALL_KINDS = ("spike", "step", "stuck", "out_of_range", "dropout")
DELAY_KINDS = ("spike", "step", "out_of_range", "stuck")


def targets(result: dict, interval_s: float, offline_after_s: float, tick_s: float) -> list[Target]:
    """The issue's targets against a score: at most 1 false alert per 100 sensor-hours of normal data;
    recall >= 95 % for spikes, steps, out-of-range values, stuck values and dropouts (by any detector);
    median delay at most two reporting intervals (dropout: offline_after_s plus one tick)."""
    out = []
    rate = result["false_per_100h"]
    out.append(Target("false alerts per 100 sensor-hours", "<= 1", "n/a" if rate is None else f"{rate:g}",
                      rate is not None and rate <= 1.0))
    kinds = result["kinds"]
    for kind in RECALL_KINDS:
        if kind in kinds:
            row = kinds[kind]["by"][ANY]
            out.append(Target(f"recall {kind}", ">= 95 %", f"{100 * row['recall']:.1f} % ({row['caught']}/"
                              f"{kinds[kind]['count']})", row["recall"] >= 0.95))
    for kind in DELAY_KINDS + ("dropout",):
        if kind in kinds:
            limit = offline_after_s + tick_s if kind == "dropout" else 2 * interval_s
            median = kinds[kind]["by"][ANY]["delay_median_s"]
            out.append(Target(f"median delay {kind}", f"<= {limit:g} s", "n/a" if median is None else f"{median:g} s",
                              median is not None and median <= limit))
    return out
