"""The simulated fleet's data, pure: sensors, their metrics' realistic behaviour (daily cycle, noise, drift),
labelled anomalies (pipeline/tools/anomalies.py), the payloads they send and the pacing that holds a rate.
No broker, no clock of its own: pipeline/tools/simulate.py publishes what this makes, and the evaluation
(pipeline/evaluate) replays it in simulated time.

Noise is that of real indoor sensors (docs/processing.md, "The simulator"): temperature sd 0.1 °C, humidity
sd 0.5 %RH, pressure sd 0.2 hPa, the order of the repeatability and noise figures in the Bosch BME280 and
Sensirion SHT3x datasheets, on top of a daily cycle and a slow per-sensor drift."""
from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Sequence

import orjson

from .anomalies import AnomalyPlanner, Plan, apply

DAY_S = 86400.0
SENSOR_TYPE = "environment"
LOCATIONS = 8
PACING_INTERVAL_S = 0.005  # one burst per 5 ms: smooth enough for the pipeline, few enough wake-ups for 10k msg/s


@dataclass(frozen=True, slots=True)
class MetricProfile:
    """Baseline and variability of one metric, in its canonical unit."""

    base: float
    daily_amplitude: float  # negative: the metric falls as the day warms (relative humidity)
    peak_hour: float        # UTC hour of the daily maximum
    period_s: float         # pressure has a 12 h atmospheric tide, the others a 24 h cycle
    noise_sd: float
    drift_amplitude: float  # slow per-sensor wander (calibration, weather), period of days
    sensor_sd: float        # sensors of the same kind never read exactly alike
    spike_offset: float     # a spike lands 1x..1.5x this far from the expected value
    low: float              # the sensor's measuring range (BME280): only an out_of_range anomaly leaves it
    high: float


PROFILES: dict[str, MetricProfile] = {
    "temperature": MetricProfile(21.0, 5.0, 15.0, DAY_S, 0.1, 1.0, 1.0, 30.0, -40.0, 85.0),
    "humidity": MetricProfile(45.0, -10.0, 15.0, DAY_S, 0.5, 3.0, 3.0, 40.0, 0.0, 100.0),
    "pressure": MetricProfile(1013.25, 1.0, 10.0, DAY_S / 2, 0.2, 4.0, 1.0, 50.0, 300.0, 1100.0),
}


def stable_seed(*parts: object) -> int:
    """A seed from the parts that is the same in every process and run (hash() is salted per process)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True, slots=True)
class Sensor:
    """One simulated device: a stable id, type and location."""

    sensor_id: str
    sensor_type: str
    location: str


def make_sensors(count: int, prefix: str = "sim") -> list[Sensor]:
    """The fleet: ids f"{prefix}-{i:04d}", the same set on every run."""
    return [Sensor(f"{prefix}-{i:04d}", SENSOR_TYPE, f"hall-{i % LOCATIONS}") for i in range(count)]


class SensorModel:
    """One metric of one sensor: daily cycle + slow drift + gaussian noise (anomalies come from the planner)."""

    def __init__(self, seed: int, sensor_id: str, metric: str):
        self.profile = p = PROFILES[metric]
        self._rng = random.Random(stable_seed(seed, sensor_id, metric))
        r = self._rng
        self._offset = r.gauss(0.0, p.sensor_sd)
        self._phase_s = r.uniform(-1800.0, 1800.0)  # halls warm up at slightly different times
        self._drift_period_s = r.uniform(2.0, 7.0) * DAY_S
        self._drift_phase = r.uniform(0.0, 2 * math.pi)

    def expected_at(self, t: float) -> float:
        """The noise-free value at epoch time t."""
        p = self.profile
        daily = p.daily_amplitude * math.cos(2 * math.pi * (t - p.peak_hour * 3600.0 - self._phase_s) / p.period_s)
        drift = p.drift_amplitude * math.sin(2 * math.pi * t / self._drift_period_s + self._drift_phase)
        return p.base + self._offset + daily + drift

    def value_at(self, t: float) -> float:
        """The next normal reading at epoch time t (not rounded); deterministic for a seed and call order."""
        p = self.profile
        return min(p.high, max(p.low, self.expected_at(t) + self._rng.gauss(0.0, p.noise_sd)))


def build_envelope_payload(sensor: Sensor, readings: dict[str, float], t: float) -> bytes:
    """JSON envelope with several readings: {"type", "location", "timestamp", "readings": {metric: value}}."""
    return orjson.dumps({"type": sensor.sensor_type, "location": sensor.location,
                         "timestamp": round(t, 3), "readings": readings})


def build_single_payload(sensor: Sensor, metric: str, value: float, t: float) -> bytes:
    """JSON object with one reading: {"metric", "value", "type", "location", "timestamp"}."""
    return orjson.dumps({"metric": metric, "value": value, "type": sensor.sensor_type,
                         "location": sensor.location, "timestamp": round(t, 3)})


def build_bare_payload(value: float) -> bytes:
    """A bare number, what small devices send on <root>/<sensor_id>/<metric>."""
    return f"{value:.2f}".encode()


class MessageFactory:
    """A deterministic stream of (topic, payload) for a slice of the fleet, round-robin over sensors, with the
    anomalies of `plan` injected (None: a message slot of a sensor in a dropout, which sends nothing)."""

    def __init__(self, sensors: Sequence[Sensor], metrics: Sequence[str], *, seed: int = 1,
                 plan: Plan | None = None, topic_style: str = "json", per_message: str = "all",
                 root: str = "sensors"):
        if topic_style not in ("json", "per-metric"):
            raise ValueError(f"topic_style {topic_style!r} is not json or per-metric")
        if per_message not in ("1", "all") or (topic_style == "per-metric" and per_message == "all"):
            raise ValueError(f"per_message {per_message!r} does not fit topic_style {topic_style!r}")
        if not sensors or not metrics:
            raise ValueError("need at least one sensor and one metric")
        self.sensors, self.metrics = list(sensors), list(metrics)
        self.topic_style, self.per_message, self.root = topic_style, per_message, root
        self.models = {(s.sensor_id, m): SensorModel(seed, s.sensor_id, m)
                       for s in self.sensors for m in self.metrics}
        plan = plan or Plan()
        self.planners = {s.sensor_id: AnomalyPlanner(plan, s.sensor_id, self.metrics,
                                                     random.Random(stable_seed(seed, s.sensor_id, "anomalies")))
                         for s in self.sensors}
        self.count = 0

    def _value(self, sensor_id: str, metric: str, t: float, anomaly) -> float:
        model = self.models[sensor_id, metric]
        value = model.value_at(t)
        if anomaly is not None:
            value = apply(anomaly, metric, t, value, model.profile, self.planners[sensor_id].frozen)
        return round(value, 2)

    def take_truth(self):
        """The anomalies begun since the last call, in start order (their ground truth)."""
        started = [a for p in self.planners.values() for a in p.take_started()]
        return sorted(started, key=lambda a: (a.start, a.sensor))

    def next_message(self, t: float) -> tuple[str, bytes] | None:
        """The next message stamped t; with one reading per message each sensor cycles through the metrics.
        None: the sensor's slot while it is in a dropout (it sends nothing)."""
        k, n = self.count, len(self.sensors)
        self.count += 1
        sensor = self.sensors[k % n]
        sid = sensor.sensor_id
        anomaly = self.planners[sid].at(t)
        # Values are drawn even in a dropout, so the normal data around anomalies does not depend on them.
        if self.per_message == "all":
            readings = {m: self._value(sid, m, t, anomaly) for m in self.metrics}
            if anomaly is not None and anomaly.kind == "dropout":
                return None
            return f"{self.root}/{sid}", build_envelope_payload(sensor, readings, t)
        metric = self.metrics[(k // n) % len(self.metrics)]
        value = self._value(sid, metric, t, anomaly)
        if anomaly is not None and anomaly.kind == "dropout":
            return None
        if self.topic_style == "per-metric":
            return f"{self.root}/{sensor.sensor_id}/{metric}", build_bare_payload(value)
        return f"{self.root}/{sensor.sensor_id}", build_single_payload(sensor, metric, value, t)


class Pacer:
    """Scheduled-time pacing: message n is due at start + n/rate, so sleep overshoot never accumulates."""

    def __init__(self, rate: float, total: int | None = None, interval_s: float = PACING_INTERVAL_S):
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate, self.total = rate, total
        self.burst = max(1, round(rate * interval_s))

    def due(self, elapsed_s: float) -> int:
        """How many messages should have been sent elapsed_s after the start."""
        if elapsed_s < 0:
            return 0
        n = math.floor(elapsed_s * self.rate + 1e-9) + 1
        return n if self.total is None else min(n, self.total)

    def wake_at(self, sent: int) -> float:
        """Seconds after the start when the next burst is due (a whole burst, so we sleep between bursts)."""
        target = sent + self.burst - 1
        if self.total is not None:
            target = min(target, self.total - 1)
        return target / self.rate
