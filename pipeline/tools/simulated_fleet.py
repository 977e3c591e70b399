"""The simulated fleet's data, pure: sensors, their metrics' realistic behaviour (daily cycle, noise, drift,
occasional spikes), the payloads they send and the pacing that holds a rate. No broker, no clock of its own:
pipeline/tools/simulate.py publishes what this makes."""
from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Sequence

import orjson

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
    low: float              # physical limits: a spike never reads an impossible value
    high: float


PROFILES: dict[str, MetricProfile] = {
    "temperature": MetricProfile(21.0, 5.0, 15.0, DAY_S, 0.2, 1.0, 1.0, 30.0, -40.0, 85.0),
    "humidity": MetricProfile(45.0, -10.0, 15.0, DAY_S, 1.0, 3.0, 3.0, 40.0, 0.0, 100.0),
    "pressure": MetricProfile(1013.25, 1.0, 10.0, DAY_S / 2, 0.3, 4.0, 1.0, 50.0, 870.0, 1085.0),
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
    """One metric of one sensor: daily cycle + slow drift + gaussian noise, and spikes at the anomaly fraction."""

    def __init__(self, seed: int, sensor_id: str, metric: str, anomalies: float = 0.0):
        self.profile = p = PROFILES[metric]
        self.anomalies = anomalies
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
        """The next reading at epoch time t, rounded to 2 decimals; deterministic for a seed and call order."""
        p, r = self.profile, self._rng
        expected = self.expected_at(t)
        if self.anomalies and r.random() < self.anomalies:
            value = expected + r.choice((-1.0, 1.0)) * r.uniform(p.spike_offset, 1.5 * p.spike_offset)
        else:
            value = expected + r.gauss(0.0, p.noise_sd)
        return round(min(p.high, max(p.low, value)), 2)


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
    """A deterministic stream of (topic, payload) for a slice of the fleet, round-robin over sensors."""

    def __init__(self, sensors: Sequence[Sensor], metrics: Sequence[str], *, seed: int = 1,
                 anomalies: float = 0.0, topic_style: str = "json", per_message: str = "all",
                 root: str = "sensors"):
        if topic_style not in ("json", "per-metric"):
            raise ValueError(f"topic_style {topic_style!r} is not json or per-metric")
        if per_message not in ("1", "all") or (topic_style == "per-metric" and per_message == "all"):
            raise ValueError(f"per_message {per_message!r} does not fit topic_style {topic_style!r}")
        if not sensors or not metrics:
            raise ValueError("need at least one sensor and one metric")
        self.sensors, self.metrics = list(sensors), list(metrics)
        self.topic_style, self.per_message, self.root = topic_style, per_message, root
        self.models = {(s.sensor_id, m): SensorModel(seed, s.sensor_id, m, anomalies)
                       for s in self.sensors for m in self.metrics}
        self.count = 0

    def next_message(self, t: float) -> tuple[str, bytes]:
        """The next message stamped t; with one reading per message each sensor cycles through the metrics."""
        k, n = self.count, len(self.sensors)
        self.count += 1
        sensor = self.sensors[k % n]
        if self.per_message == "all":
            readings = {m: self.models[sensor.sensor_id, m].value_at(t) for m in self.metrics}
            return f"{self.root}/{sensor.sensor_id}", build_envelope_payload(sensor, readings, t)
        metric = self.metrics[(k // n) % len(self.metrics)]
        value = self.models[sensor.sensor_id, metric].value_at(t)
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
