"""A per-reading reference of the readings path: each candidate through validation, units, lateness and limits
one at a time, then COPY rows and Redis stream entries built reading by reading, the simplest way.

It is what the batch path in pipeline/stages and pipeline/sinks must equal (tests/unit/stages/
test_batch_path_properties.py). It reuses only the pure field checks and the decoder (both message by message
already); the orchestration, the state and the row building are its own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from pipeline.records import DeadLetter, Invalid, RawMessage, Reading
from pipeline.runtime.chain import Refusal, merge_refusals
from pipeline.stages.validate import (LOCATION_MAX, TYPE_MAX, TYPE_RE, _check_text, check_event_time, check_metric,
                                      check_sensor_id, check_value)

RESERVED = ("app:", "broker:", "kafka:")


@dataclass
class Reference:
    """The chain's settings and state, per reading."""

    now: float
    units: dict  # metric -> (canonical, {unit: (scale, offset)})
    grace_s: float
    max_lateness_s: float
    max_sensors: int
    max_metrics: int
    default_type: str = "sensor"
    max_future_skew_s: float = 300.0
    max_age_s: float = 30 * 86400.0
    high: dict = field(default_factory=dict)  # partition -> highest event time
    metrics: dict = field(default_factory=dict)  # sensor -> metrics admitted, in order
    labels: dict = field(default_factory=dict)  # sensor -> (type, location) it registered with

    def validate(self, c) -> Reading:
        sensor_id = check_sensor_id(c.sensor_id)
        metric = check_metric(c.metric)
        value = check_value(c.value)
        ts = check_event_time(c.timestamp, c.source.received_at, self.now, self.max_future_skew_s, self.max_age_s)
        stype = self.default_type if c.sensor_type is None else _check_text(c.sensor_type, "type", TYPE_MAX, TYPE_RE)
        loc = None if c.location is None else _check_text(c.location, "location", LOCATION_MAX)
        unit = None if c.unit is None else _check_text(c.unit, "unit", TYPE_MAX)
        return Reading(sensor_id, stype, loc, metric, value, ts, c.source.received_at, c.source, unit)

    def transform(self, r: Reading) -> None:
        # A metric's own rule, else that of its longest configured ending after a "_" (bme280_temperature).
        parts = r.metric.split("_")
        rule = next((self.units[e] for e in ("_".join(parts[i:]) for i in range(len(parts))) if e in self.units), None)
        if r.unit is None or rule is None:
            return
        canonical, conversions = rule
        if r.unit == canonical:
            return
        if r.unit not in conversions:
            raise Invalid("unknown_unit", f"{r.metric} in {r.unit!r}; known: {canonical}, {', '.join(conversions)}")
        scale, offset = conversions[r.unit]
        value = r.value * scale + offset
        if not math.isfinite(value):
            raise Invalid("value_not_finite", f"{r.metric} {r.value!r} {r.unit} is {value} {canonical}")
        r.value, r.unit = value, canonical

    def lateness(self, r: Reading) -> None:
        high = self.high.get(r.source.partition)
        if high is None or r.ts > high:
            self.high[r.source.partition] = r.ts
            return
        watermark = high - self.grace_s
        if r.ts < watermark - self.max_lateness_s:
            raise Invalid("late", f"event time {r.ts:.3f} is {watermark - r.ts:.0f} s behind the partition watermark "
                                  f"{watermark:.3f} (limit {self.max_lateness_s:g} s)")

    def limits(self, r: Reading) -> None:
        sid = r.sensor_id
        reserved = ("reserved_sensor_id" if sid.lower().startswith(RESERVED) else
                    "reserved_sensor_type" if r.sensor_type.lower() in ("app", "broker", "kafka") else None)
        if reserved:
            raise Invalid(reserved, f"sensor {sid!r} of type {r.sensor_type!r}: ids app:/broker:/kafka:"
                                    f"* and types app/broker/kafka are the daemon's own")
        known = self.metrics.get(sid)
        if known is None and len(self.metrics) >= self.max_sensors:
            raise Invalid("too_many_sensors", f"{self.max_sensors} sensors known, {sid!r} is new (limits.max_sensors)")
        if known is not None and r.metric not in known and len(known) >= self.max_metrics:
            raise Invalid("too_many_metrics", f"sensor {sid!r} has {self.max_metrics} metrics, {r.metric!r} is new "
                                              "(limits.max_metrics_per_sensor)")
        known = self.metrics.setdefault(sid, [])
        if r.metric not in known:
            known.append(r.metric)
        r.sensor_type, r.location = self.labels.setdefault(sid, (r.sensor_type, r.location))

    def run(self, decode, raws: list[RawMessage]) -> tuple[list[Reading], list[DeadLetter]]:
        """Every reading of every message, one at a time. A message's refusals are listed stage by stage (the
        chain's order: a stage sees the whole batch before the next), readings in order within a stage."""
        out: list[Reading] = []
        dead: list[DeadLetter] = []
        stages = (("validate", None), ("transform", self.transform), ("lateness", self.lateness),
                  ("limits", self.limits))
        for raw in raws:
            refusals: list[tuple[int, Refusal]] = []
            try:
                candidates = decode.process(raw)
            except Invalid as err:
                dead += merge_refusals(raw, [Refusal("decode", err.reason, str(err), "invalid")])
                continue
            for c in candidates:
                metric = c.metric if isinstance(c.metric, str) else None
                try:
                    r = self.validate(c)
                except Invalid as err:
                    refusals.append((0, Refusal("validate", err.reason, str(err), "invalid", metric)))
                    continue
                for n, (name, step) in enumerate(stages[1:], 1):
                    try:
                        step(r)
                    except Invalid as err:
                        refusals.append((n, Refusal(name, err.reason, str(err), "invalid", r.metric)))
                        break
                else:
                    out.append(r)
            if refusals:
                refusals.sort(key=lambda x: x[0])  # stable: reading order within a stage
                dead += merge_refusals(raw, [r for _, r in refusals])
        return out, dead


def copy_rows(records) -> str:
    """The COPY text of the staging table, one row per reading."""
    return "".join(f"{r.sensor_id}\t{r.metric}\t{r.value!r}\t{r.ts!r}\n" for r in records)


def bulk(text: str) -> str:
    return f"${len(text.encode())}\r\n{text}\r\n"


def xadd_entries(head: str, records) -> bytes:
    """Every reading's XADD in RESP: id, sensor_id, metric, value, ts, received_at."""
    out = []
    for r in records:
        fields = {"id": r.reading_id, "sensor_id": r.sensor_id, "metric": r.metric, "value": repr(r.value),
                  "ts": repr(r.ts), "received_at": repr(r.received_at)}
        out.append(head + "".join(bulk(k) + bulk(v) for k, v in fields.items()))
    return "".join(out).encode()


def latest_per_sensor(records) -> dict:
    """sensor -> the newest reading of each of its metrics (of equal times, the later in the batch), sensors and
    metrics in the order first seen."""
    latest: dict = {}
    for r in records:
        newest = latest.setdefault(r.sensor_id, {})
        if r.metric not in newest or r.ts >= newest[r.metric].ts:
            newest[r.metric] = r
    return {sensor_id: list(newest.values()) for sensor_id, newest in latest.items()}
