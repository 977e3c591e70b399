"""Sensor and metric limits: a stateful filter over readings, run as the last stage of the chain.

It is stateful (it remembers which sensors and metrics are known), so it lives with the operators; it runs
as a stage because a refusal must be a dead letter of the message that carried it (one letter per message,
like every other refusal), and the chain runs only in the consumer thread, so the state needs no lock.
Memory is bounded by the limits themselves: at most `max_sensors` ids, each with at most
`max_metrics_per_sensor` metric names (tuples of interned strings: a dozen metrics cost about 150 bytes).

It also holds the registry's view of the `sensors` table, the one truth about a sensor's type and location:
a reading of a registered sensor leaves with the registered type and location, whatever it claimed, so
neither PostgreSQL nor the Redis mirror (`latest:<id>`) is relabelled by a publisher. A reading of a new
sensor (registration `open`) fills in its registration once. With registration `known` an id the table
does not hold is refused as unknown_sensor. Ids and types the daemon writes itself (log counts `app:<app>`,
broker drops `broker:<host>`) are refused as reserved_sensor_id / reserved_sensor_type: those readings are
handed to the sinks inside the daemon and never pass this chain. The table is reread every
`limits.registry_refresh_s` by a runner in another thread (refresh.py), which offers the snapshot; the
consumer thread swaps it in before its next reading, so the state still needs no lock.
"""
from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from typing import Iterable

from ...ingest.broker_stats import SENSOR_TYPE as BROKER_SENSOR_TYPE
from ...records import Invalid, Reading
from ..logcounts.counting import APP_SENSOR_TYPE

# Sensor types the daemon writes itself; each also reserves the id prefix "<type>:" (app:<app>, broker:<host>).
# Compared without case, so `App:x` or type `BROKER` cannot pass for them on the dashboard either.
RESERVED_TYPES = frozenset({APP_SENSOR_TYPE, BROKER_SENSOR_TYPE})
RESERVED_PREFIXES = tuple(f"{t}:" for t in sorted(RESERVED_TYPES))
_PREFIX_LEN = max(len(p) for p in RESERVED_PREFIXES)
Labels = tuple[str, "str | None"]  # (type, location) as registered


def reserved_reason(sensor_id: str, sensor_type: str | None) -> str | None:
    """reserved_sensor_id / reserved_sensor_type when a published reading claims what only the daemon writes."""
    if sensor_id[:_PREFIX_LEN].lower().startswith(RESERVED_PREFIXES):
        return "reserved_sensor_id"
    if sensor_type is not None and sensor_type.lower() in RESERVED_TYPES:
        return "reserved_sensor_type"
    return None


class SensorRegistry:
    """Known sensors and their metrics; `admit` says whether a reading fits the limits, remembering it if so."""

    def __init__(self, max_sensors: int, max_metrics_per_sensor: int):
        self.max_sensors = max_sensors
        self.max_metrics = max_metrics_per_sensor
        self._known: dict[str, tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self._known)

    def metrics_of(self, sensor_id: str) -> tuple[str, ...]:
        return self._known.get(sensor_id, ())

    def admit(self, sensor_id: str, metric: str) -> str | None:
        """None if the reading fits (and is now known), else the reason it does not."""
        metrics = self._known.get(sensor_id)
        if metrics is None:
            if len(self._known) >= self.max_sensors:
                return "too_many_sensors"
            self._known[sensor_id] = (sys.intern(metric),)
            return None
        if metric in metrics:
            return None
        if len(metrics) >= self.max_metrics:
            return "too_many_metrics"
        self._known[sensor_id] = metrics + (sys.intern(metric),)
        return None

    def preload(self, sensors: Iterable[str], pairs: Iterable[tuple[str, str]]) -> None:
        """Sensors (and their metrics) already stored count against the limits; beyond them, the rest is left out."""
        known = self._known
        for sensor_id in sensors:
            if len(known) >= self.max_sensors:
                break
            known.setdefault(sensor_id, ())
        for sensor_id, metric in pairs:
            metrics = known.get(sensor_id)
            if metrics is None and len(known) >= self.max_sensors:
                continue
            metrics = metrics or ()
            if metric not in metrics and len(metrics) < self.max_metrics:
                known[sensor_id] = metrics + (sys.intern(metric),)


class LimitFilter:
    """Reading -> itself with its registered type and location, or Invalid reserved_sensor_id /
    reserved_sensor_type / unknown_sensor / too_many_sensors / too_many_metrics. Other records pass unchanged."""

    name = "limits"
    accepts = Reading

    def __init__(self, max_sensors: int, max_metrics_per_sensor: int, registration: str = "open"):
        self.registry = SensorRegistry(max_sensors, max_metrics_per_sensor)
        self.known_only = registration == "known"
        # sensor id -> (type, location) as registered; in open mode also sensors this filter let register.
        # Bounded: at most max_sensors rows read from the table plus max_sensors admitted here.
        self.labels: dict[str, Labels] = {}
        self._offered: dict[str, Labels] | None = None  # a snapshot of the table, from the refresh thread

    def offer(self, snapshot: dict[str, Labels]) -> None:
        """Called from the refresh thread: the table as just read; swapped in by the consumer thread."""
        self._offered = snapshot

    def use(self, snapshot: dict[str, Labels]) -> None:
        """Take a snapshot of the table. Known mode: exactly the table (removed ids are refused again). Open
        mode: the table wins for the ids it holds; ids registered here and not yet committed stay."""
        if self.known_only:
            self.labels = snapshot
        else:
            self.labels.update(snapshot)

    def process(self, r: Reading) -> list[Reading]:
        sensor_id = r.sensor_id
        if self._offered is not None:
            snapshot, self._offered = self._offered, None
            self.use(snapshot)
        reserved = reserved_reason(sensor_id, r.sensor_type)
        if reserved is not None:
            raise Invalid(reserved, f"sensor {sensor_id!r} of type {r.sensor_type!r}: ids {'/'.join(RESERVED_PREFIXES)}"
                                    f"* and types {'/'.join(sorted(RESERVED_TYPES))} are the daemon's own")
        labels = self.labels.get(sensor_id)
        if labels is None and self.known_only:
            raise Invalid("unknown_sensor", f"sensor {sensor_id!r} is not registered (limits.registration: known; "
                                            "add it with python -m pipeline.sensors)")
        reason = self.registry.admit(sensor_id, r.metric)
        if reason is None:
            if labels is None:  # open mode, a new sensor: its first admitted reading fills in the registration
                self.labels[sensor_id] = (r.sensor_type, r.location)
            elif r.sensor_type != labels[0] or r.location != labels[1]:
                r.sensor_type, r.location = labels
            return [r]
        if reason == "too_many_sensors":
            raise Invalid(reason, f"{self.registry.max_sensors} sensors known, {r.sensor_id!r} is new (limits.max_sensors)")
        raise Invalid(reason, f"sensor {r.sensor_id!r} has {self.registry.max_metrics} metrics, {r.metric!r} is new "
                              "(limits.max_metrics_per_sensor)")


READ_REGISTERED = "SELECT sensor_id, type, location FROM sensors ORDER BY sensor_id LIMIT %s"


def read_registered(conn, limit: int) -> dict[str, Labels]:
    """The `sensors` table (up to `limit` ids, a primary-key scan): id -> (type, location), types interned."""
    intern = sys.intern
    return {sensor_id: (intern(stype), location) for sensor_id, stype, location in conn.execute(READ_REGISTERED, (limit,))}


def load_known(conn, registry: SensorRegistry, period: str | None, lookback_s: float, now: datetime | None = None,
               limits: LimitFilter | None = None) -> None:
    """Fill `registry` from PostgreSQL: every id in `sensors` (up to the limit, a primary-key scan), and the metrics
    of the windows of `period` that started in the last `lookback_s` (the period/timestamp index; none when
    `period` is None or lookback_s is 0). Metrics of sensors quiet for longer count again from this start.
    With `limits`, their registered types and locations too."""
    limit = registry.max_sensors
    registered = read_registered(conn, limit)
    if limits is not None:
        limits.use(registered)
    sensors = list(registered)
    pairs: list = []
    if period is not None and lookback_s > 0:
        since = (now or datetime.now(timezone.utc)).replace(tzinfo=None) - timedelta(seconds=lookback_s)
        pairs = conn.execute("SELECT DISTINCT sensor_id, metric FROM aggregations WHERE period = %s AND timestamp >= %s "
                             "LIMIT %s", (period, since, limit * registry.max_metrics)).fetchall()
    registry.preload(sensors, pairs)
