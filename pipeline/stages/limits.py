"""Sensor and metric limits: a stateful filter over readings, run as the last stage of the chain.

It is a stage (a refusal must be a dead letter of the message that carried it, one letter per message, like
every other refusal) that keeps state (which sensors and metrics are known); the chain runs only in the consumer
thread, so the state needs no lock. Its refresh from the `sensors` table runs beside it as a thread of its own
(pipeline/operators/limits/refresh.py).
Memory is bounded by the limits themselves: at most `max_sensors` ids, each with at most
`max_metrics_per_sensor` metric names (tuples of interned strings: a dozen metrics cost about 150 bytes).

Only active sensors count: a sensor without an admitted reading for `limits.state_idle_s` is released
(its metrics with it) by `evict_idle`, which the filter runs on the consumer thread as readings pass, every
tenth of the idle time (at most a minute apart). A reading is seen when the MQTT bridge received it
(`received_at`: no clock call per reading). A released sensor that returns is admitted again like a new one (if
the count allows). Ids loaded from PostgreSQL at start count as seen at start.

It also holds the registry's view of the `sensors` table, the one truth about a sensor's type and location:
a reading of a registered sensor leaves with the registered type and location, whatever it claimed, so
neither PostgreSQL nor the Redis mirror (`latest:<id>`) is relabelled by a publisher. A reading of a new
sensor (registration `open`) fills in its registration once. With registration `known` an id the table
does not hold is refused as unknown_sensor. Ids and types the daemon writes itself (log counts `app:<app>`,
broker drops `broker:<host>`, records a Kafka partition skipped `kafka:<topic>:<partition>`) are refused as reserved_sensor_id / reserved_sensor_type: those readings are
handed to the sinks inside the daemon and never pass this chain. The table is reread every
`limits.registry_refresh_s` by a runner in another thread (refresh.py), which offers the snapshot; the
consumer thread swaps it in before its next reading, so the state still needs no lock.
In open mode the labels of sensors this filter let register are released with the sensor (the table's stay).

The table grows for ever (every sensor that ever registered), while memory is bounded by `max_sensors`: the
snapshot holds the first `max_sensors` ids. When that is the whole table, an id it lacks is not registered.
When the table is larger, an id it lacks is looked up in PostgreSQL (`lookup`, by primary key) before it is
refused (known mode) or registered as new (open mode), so a registered sensor past the snapshot keeps its
acceptance and labels; what a lookup finds is held while the sensor is active and reread with each snapshot
(one `= ANY` statement). Lookups cost the consumer thread a round trip each, so they are bounded: at most
`limits.registry_lookups_per_s`, and an id found absent is not asked again until the next snapshot (a miss
is what a hostile publisher makes at will). Beyond the budget a miss is handled as if the id were absent. At
start, with a table larger than the snapshot, the sensors of recent windows (the active ones) are loaded
with their labels and count against `max_sensors`, not the first ids of the table.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

from ..records import APP_SENSOR_TYPE, BROKER_SENSOR_TYPE, KAFKA_SENSOR_TYPE, Invalid, Reading
from ..runtime.idle import IdleSweep
from ..runtime import memory
from ..runtime.stage import RecordStage, Refused

log = logging.getLogger(__name__)

# Sensor types the daemon writes itself; each also reserves the id prefix "<type>:" (app:<app>, broker:<host>,
# kafka:<topic>:<partition>).
# Compared without case, so `App:x` or type `BROKER` cannot pass for them on the dashboard either.
RESERVED_TYPES = frozenset({APP_SENSOR_TYPE, BROKER_SENSOR_TYPE, KAFKA_SENSOR_TYPE})
RESERVED_PREFIXES = tuple(f"{t}:" for t in sorted(RESERVED_TYPES))
_PREFIX_LEN = max(len(p) for p in RESERVED_PREFIXES)
Labels = tuple[str, "str | None"]  # (type, location) as registered
Lookup = Callable[[list], "dict[str, Labels]"]  # ids -> the labels of those registered (PostgreSQL)
_ABSENT_MAX = 100_000  # ids found absent, remembered until the next snapshot (then forgotten, or at this many)


def reserved_reason(sensor_id: str, sensor_type: str | None) -> str | None:
    """reserved_sensor_id / reserved_sensor_type when a published reading claims what only the daemon writes."""
    if sensor_id[:_PREFIX_LEN].lower().startswith(RESERVED_PREFIXES):
        return "reserved_sensor_id"
    if sensor_type is not None and sensor_type.lower() in RESERVED_TYPES:
        return "reserved_sensor_type"
    return None


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

    def __contains__(self, sensor_id: str) -> bool:
        return sensor_id in self._known

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


class LimitFilter(RecordStage):
    """Reading -> itself with its registered type and location, or Invalid reserved_sensor_id /
    reserved_sensor_type / unknown_sensor / too_many_sensors / too_many_metrics. Other records pass unchanged."""

    name = "limits"
    accepts = Reading

    def __init__(self, max_sensors: int, max_metrics_per_sensor: int, registration: str = "open",
                 state_idle_s: float = 86400.0, clock=time.time, lookup: Lookup | None = None,
                 lookups_per_s: float = 1000.0):
        self.registry = SensorRegistry(max_sensors, max_metrics_per_sensor, clock)  # clock: for the start-up load
        self.known_only = registration == "known"
        self.idle_s = state_idle_s
        self.sweep = IdleSweep(state_idle_s)
        self._sweep_at = -math.inf  # asked of the sweep schedule only then: this runs for every reading
        # sensor id -> (type, location) as registered; in open mode also sensors this filter let register.
        # Bounded: at most max_sensors rows read from the table plus the sensors the registry holds.
        self.labels: dict[str, Labels] = {}
        self._table: dict[str, Labels] = {}  # the table as last read (its first max_sensors ids)
        self._offered: tuple | None = None  # (table, complete, extras) from the refresh thread
        self.complete = True  # the table read is the whole table: a miss is not registered, no lookup
        self.lookup = lookup  # set by the daemon: a primary-key read of `sensors`, on this thread
        self.lookups_per_s = lookups_per_s
        self._budget, self._budget_until = 0.0, -math.inf
        self._absent: set[str] = set()
        self._fresh: dict[str, Labels] = {}  # found by lookup since the last snapshot
        # Ids past the table read that this filter holds labels for: reread with the next snapshot (a tuple,
        # replaced whole, read by the refresh thread).
        self.extra_ids: tuple[str, ...] = ()
        self.lookups = self.lookups_skipped = 0

    def offer(self, snapshot: dict[str, Labels], complete: bool = True, extras: dict[str, Labels] | None = None) -> None:
        """Called from the refresh thread: the table as just read (`complete`: all of it) and the rows of
        `extra_ids` it reread; swapped in by the consumer thread."""
        self._offered = (snapshot, complete, extras or {})

    def use(self, snapshot: dict[str, Labels], complete: bool = True, extras: dict[str, Labels] | None = None) -> None:
        """Take a snapshot of the table. Known mode: exactly the table (removed ids are refused again), plus the
        ids past it still registered and those found since. Open mode: the table wins for the ids it holds;
        ids registered here and not yet committed stay."""
        self._table, self.complete = snapshot, complete
        if self.known_only:
            self.labels = {**snapshot, **self._fresh, **(extras or {})}  # a reread is newer than a lookup
        else:
            self.labels.update(snapshot)
            self.labels.update(extras or {})
        self._fresh, self._absent = {}, set()
        if not complete:
            registry = self.registry
            self.extra_ids = tuple(s for s in self.labels if s not in snapshot and (s in registry or not self.known_only))
        else:
            self.extra_ids = ()

    def _look_up(self, sensor_id: str, now: float) -> Labels | None:
        """A miss while the table read is not the whole table: its labels from PostgreSQL, if registered."""
        if self.lookup is None or sensor_id in self._absent:
            return None
        if now >= self._budget_until:
            self._budget, self._budget_until = self.lookups_per_s, now + 1.0
        if self._budget < 1:
            self.lookups_skipped += 1
            return None
        self._budget -= 1
        self.lookups += 1
        try:
            found = self.lookup([sensor_id]).get(sensor_id)
        except Exception as err:  # noqa: BLE001 - PostgreSQL away: handled as absent; nothing is remembered
            log.warning("event=registry_lookup_failed sensor_id=%r error=%r", sensor_id[:50], str(err)[:200])
            return None
        if found is None:
            if len(self._absent) >= _ABSENT_MAX:
                self._absent = set()
            self._absent.add(sensor_id)
            return None
        self.labels[sensor_id] = self._fresh[sensor_id] = found
        return found

    def evict_idle(self, now: float) -> int:
        """Release the sensors without an admitted reading for state_idle_s, and in open mode the labels of
        those the table does not hold; returns how many sensors went."""
        gone = self.registry.evict_idle(now, self.idle_s)
        if gone and not self.known_only:
            registry, table = self.registry, self._table
            self.labels = {s: lab for s, lab in self.labels.items() if s in table or s in registry}
        return gone

    def idle(self, now: float) -> None:
        """The consumer got no message (its poll timed out): release idle sensors if the sweep is due. Without it
        a flood's sensors stayed held until the next reading came (pymalloc arenas with them, bench/RESULTS.md)."""
        if now >= self._sweep_at:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        if self.sweep.due(now):
            memory.released(self.evict_idle(now), "limits")
        self._sweep_at = self.sweep.next_at

    def process_batch(self, items: list, refused: Refused) -> list:
        """`process` over the batch. A message's readings share their sensor id, type, location and receive
        time: after one of them passed `process`, the next (same objects, no snapshot waiting, no sweep due)
        needs only its metric known to the registry, and leaves with the labels the first one got."""
        out: list = []
        append = out.append
        process = self.process
        known = self.registry._known
        # The sensor id, type, location and receive time the last reading passed claimed (None: none passed).
        last_sid = last_type = last_loc = last_now = None
        metrics: tuple = ()  # the metrics the registry held for it after it passed
        labels: tuple = ()  # the (type, location) it left with
        relabel = False  # whether they differ from what it claimed
        for r in items:
            sensor_id, now = r.sensor_id, r.received_at
            # As registry.admit's own first case; the sensor was already seen at `now` by the first reading. A
            # metric admitted since `metrics` was read goes through `process` (still admitted, nothing new).
            if (sensor_id is last_sid and r.sensor_type is last_type and r.location is last_loc and now is last_now
                    and r.metric in metrics and self._offered is None and now < self._sweep_at):
                if relabel:
                    r.sensor_type, r.location = labels
                append(r)
                continue
            claimed_type, claimed_loc = r.sensor_type, r.location
            try:
                process(r)
            except Exception as err:  # noqa: BLE001 - refused alone, as per_record does
                refused.add(r, err)
                last_sid = None
                continue
            last_sid, last_type, last_loc, last_now = sensor_id, claimed_type, claimed_loc, now
            metrics = known.get(sensor_id, ())
            labels = (r.sensor_type, r.location)
            relabel = r.sensor_type is not claimed_type or r.location is not claimed_loc
            append(r)
        return out

    def process(self, r: Reading) -> list[Reading]:
        sensor_id, now = r.sensor_id, r.received_at
        if self._offered is not None:
            offered, self._offered = self._offered, None
            self.use(*offered)
        if now >= self._sweep_at:  # idle sensors are released as readings pass, or while none comes (`idle`)
            self._sweep(now)
        reserved = reserved_reason(sensor_id, r.sensor_type)
        if reserved is not None:
            raise Invalid(reserved, f"sensor {sensor_id!r} of type {r.sensor_type!r}: ids {'/'.join(RESERVED_PREFIXES)}"
                                    f"* and types {'/'.join(sorted(RESERVED_TYPES))} are the daemon's own")
        labels = self.labels.get(sensor_id)
        if labels is None and not self.complete:  # past the table read: maybe registered all the same
            labels = self._look_up(sensor_id, now)
        if labels is None and self.known_only:
            raise Invalid("unknown_sensor", f"sensor {sensor_id!r} is not registered (limits.registration: known; "
                                            "add it with python -m pipeline.sensors)")
        reason = self.registry.admit(sensor_id, r.metric, now)
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
READ_THESE = "SELECT sensor_id, type, location FROM sensors WHERE sensor_id = ANY(%s)"


def read_registered(conn, limit: int) -> dict[str, Labels]:
    """The `sensors` table (up to `limit` ids, a primary-key scan): id -> (type, location), types interned.
    Fewer than `limit` rows: that is the whole table."""
    intern = sys.intern
    return {sensor_id: (intern(stype), location) for sensor_id, stype, location in conn.execute(READ_REGISTERED, (limit,))}


def read_these(conn, sensor_ids: list) -> dict[str, Labels]:
    """The registered ones among `sensor_ids` (one statement, by primary key): id -> (type, location)."""
    if not sensor_ids:
        return {}
    intern = sys.intern
    return {sensor_id: (intern(stype), location)
            for sensor_id, stype, location in conn.execute(READ_THESE, (list(sensor_ids),))}


def load_known(conn, registry: SensorRegistry, period: str | None, lookback_s: float, now: datetime | None = None,
               limits: LimitFilter | None = None) -> None:
    """Fill `registry` from PostgreSQL: every id in `sensors` (up to the limit, a primary-key scan), and the metrics
    of the windows of `period` that started in the last `lookback_s` (the period/timestamp index; none when
    `period` is None or lookback_s is 0). Metrics of sensors quiet for longer count again from this start.
    With `limits`, their registered types and locations too."""
    limit = registry.max_sensors
    registered = read_registered(conn, limit)
    complete = len(registered) < limit
    pairs: list = []
    if period is not None and lookback_s > 0:
        since = (now or datetime.now(timezone.utc)).replace(tzinfo=None) - timedelta(seconds=lookback_s)
        pairs = conn.execute("SELECT DISTINCT sensor_id, metric FROM aggregations WHERE period = %s AND timestamp >= %s "
                             "LIMIT %s", (period, since, limit * registry.max_metrics)).fetchall()
    if complete:
        sensors = list(registered)
        extras: dict[str, Labels] = {}
    else:  # the table outgrew the limit: the recently active sensors count, not the first ids of the table
        sensors = list(dict.fromkeys(s for s, _ in pairs))
        extras = read_these(conn, [s for s in sensors if s not in registered]) if limits is not None else {}
    registry.preload(sensors, pairs)
    if limits is not None:  # after the preload: the sensors it holds are those reread past the table read
        limits.use(registered, complete, extras)
