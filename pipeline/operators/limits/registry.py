"""Sensor and metric limits: a stateful filter over readings, run as the last stage of the chain.

It is stateful (it remembers which sensors and metrics are known), so it lives with the operators; it runs
as a stage because a refusal must be a dead letter of the message that carried it (one letter per message,
like every other refusal), and the chain runs only in the consumer thread, so the state needs no lock.
Memory is bounded by the limits themselves: at most `max_sensors` ids, each with at most
`max_metrics_per_sensor` metric names (tuples of interned strings: a dozen metrics cost about 150 bytes).

Only active sensors count: a sensor without an admitted reading for `limits.state_idle_s` is released
(its metrics with it) by `evict_idle`, which the filter runs on the consumer thread as readings pass, every
tenth of the idle time (at most a minute apart). A reading is seen when the MQTT bridge received it
(`received_at`: no clock call per reading). A released sensor that returns is admitted again like a new one (if
the count allows). Ids loaded from PostgreSQL at start count as seen at start.
"""
from __future__ import annotations

import math
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Iterable

from ...records import Invalid, Reading
from ...runtime.idle import IdleSweep


class SensorRegistry:
    """Known sensors and their metrics; `admit` says whether a reading fits the limits, remembering it if so."""

    def __init__(self, max_sensors: int, max_metrics_per_sensor: int, clock=time.time):
        self.max_sensors = max_sensors
        self.max_metrics = max_metrics_per_sensor
        self.clock = clock
        self._known: dict[str, tuple[str, ...]] = {}
        self._seen: dict[str, float] = {}  # sensor -> when a reading of it was last admitted

    def __len__(self) -> int:
        return len(self._known)

    def metrics_of(self, sensor_id: str) -> tuple[str, ...]:
        return self._known.get(sensor_id, ())

    def admit(self, sensor_id: str, metric: str, now: float | None = None) -> str | None:
        """None if the reading fits (and is now known, seen at `now`), else the reason it does not."""
        if now is None:
            now = self.clock()
        metrics = self._known.get(sensor_id)
        if metrics is not None and metric in metrics:  # nearly every reading
            self._seen[sensor_id] = now
            return None
        if metrics is None:
            if len(self._known) >= self.max_sensors:
                return "too_many_sensors"
            metrics = ()
        elif len(metrics) >= self.max_metrics:
            return "too_many_metrics"
        self._known[sensor_id] = metrics + (sys.intern(metric),)
        self._seen[sensor_id] = now
        return None

    def evict_idle(self, now: float, idle_s: float) -> int:
        """Release the sensors without an admitted reading since `now - idle_s`; returns how many."""
        cutoff = now - idle_s
        gone = [s for s, seen in self._seen.items() if seen < cutoff]
        for sensor_id in gone:
            del self._seen[sensor_id]
            self._known.pop(sensor_id, None)
        if len(gone) > len(self._seen):  # a dict keeps its table when emptied: copied, it frees the memory
            self._seen, self._known = dict(self._seen), dict(self._known)
        return len(gone)

    def preload(self, sensors: Iterable[str], pairs: Iterable[tuple[str, str]]) -> None:
        """Sensors (and their metrics) already stored count against the limits (as seen now); beyond them, the rest
        is left out."""
        known = self._known
        now = self.clock()
        for sensor_id in sensors:
            if len(known) >= self.max_sensors:
                break
            known.setdefault(sensor_id, ())
            self._seen.setdefault(sensor_id, now)
        for sensor_id, metric in pairs:
            metrics = known.get(sensor_id)
            if metrics is None and len(known) >= self.max_sensors:
                continue
            metrics = metrics or ()
            if metric not in metrics and len(metrics) < self.max_metrics:
                known[sensor_id] = metrics + (sys.intern(metric),)
                self._seen.setdefault(sensor_id, now)


class LimitFilter:
    """Reading -> itself, or Invalid too_many_sensors / too_many_metrics. Other records pass unchanged."""

    name = "limits"
    accepts = Reading

    def __init__(self, max_sensors: int, max_metrics_per_sensor: int, state_idle_s: float = 86400.0,
                 clock=time.time):
        self.registry = SensorRegistry(max_sensors, max_metrics_per_sensor, clock)  # clock: for the start-up load
        self.idle_s = state_idle_s
        self.sweep = IdleSweep(state_idle_s)
        self._sweep_at = -math.inf  # asked of the sweep schedule only then: this runs for every reading

    def process(self, r: Reading) -> list[Reading]:
        now = r.received_at
        if now >= self._sweep_at:  # the chain has no timer: idle sensors are released as readings pass
            if self.sweep.due(now):
                self.registry.evict_idle(now, self.idle_s)
            self._sweep_at = self.sweep.next_at
        reason = self.registry.admit(r.sensor_id, r.metric, now)
        if reason is None:
            return [r]
        if reason == "too_many_sensors":
            raise Invalid(reason, f"{self.registry.max_sensors} sensors known, {r.sensor_id!r} is new (limits.max_sensors)")
        raise Invalid(reason, f"sensor {r.sensor_id!r} has {self.registry.max_metrics} metrics, {r.metric!r} is new "
                              "(limits.max_metrics_per_sensor)")


def load_known(conn, registry: SensorRegistry, period: str | None, lookback_s: float, now: datetime | None = None) -> None:
    """Fill `registry` from PostgreSQL: every id in `sensors` (up to the limit, a primary-key scan), and the metrics
    of the windows of `period` that started in the last `lookback_s` (the period/timestamp index; none when
    `period` is None or lookback_s is 0). Metrics of sensors quiet for longer count again from this start."""
    limit = registry.max_sensors
    sensors = [row[0] for row in conn.execute("SELECT sensor_id FROM sensors ORDER BY sensor_id LIMIT %s", (limit,))]
    pairs: list = []
    if period is not None and lookback_s > 0:
        since = (now or datetime.now(timezone.utc)).replace(tzinfo=None) - timedelta(seconds=lookback_s)
        pairs = conn.execute("SELECT DISTINCT sensor_id, metric FROM aggregations WHERE period = %s AND timestamp >= %s "
                             "LIMIT %s", (period, since, limit * registry.max_metrics)).fetchall()
    registry.preload(sensors, pairs)
