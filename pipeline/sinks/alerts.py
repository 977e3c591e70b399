"""The alert evaluator: a sink thread that owns alert state. Detectors judge each reading, the lifecycle
turns signals into transitions, and transitions go to PostgreSQL, the Redis stream and the webhook.

It is one of the pipeline's sinks, so a batch's Kafka offsets are committed only after its readings were
evaluated and the resulting alerts stored. Each reading is judged once, when its batch arrives
(`select`); `write` only stores transitions, so a retried write never judges a reading twice. Its tick
(processing.interval_s) runs the offline detector, time-based resolution and a check for alerts that an
operator resolved in the database.

Redis stream <alerts stream> (under redis.key_prefix): XADD event, alert_id, sensor_id, metric, type,
severity, message, timestamp, value: one entry per transition.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Sequence

import psycopg
import redis
from psycopg_pool import ConnectionPool, PoolTimeout

from ..config import Config, PostgresConfig, RedisConfig, Secret
from ..db import conninfo
from ..detect.detectors import Outlier, Rate, Stuck, Threshold, offline, offline_tracked
from ..detect.rules import Rules
from ..alerts.lifecycle import ESCALATED, OPENED, RESOLVED, SEVERITY_RANK, Alert, AlertBook, Transition
from ..alerts.messages import message
from ..alerts.webhook import WebhookNotifier
from ..runtime.batch import Batch
from ..runtime.ownership import Ownership, sensor_partition
from ..runtime.retry import Stopped, retry_call
from .base import BatchingSink
from .postgres import INSERT_SENSORS
from .redis_stream import connect

log = logging.getLogger(__name__)
_UTC = timezone.utc

LOAD_OPEN = ("SELECT id, sensor_id, metric, type, severity, message, timestamp FROM alerts "
             "WHERE NOT resolved ORDER BY id")
OPEN_IDS = "SELECT id FROM alerts WHERE NOT resolved"
KNOWN_SENSORS = "SELECT sensor_id, type FROM sensors"
# The partial unique index alerts_one_open is the arbiter: an alert already open is adopted, not doubled.
INSERT_ALERT = ("INSERT INTO alerts (sensor_id, metric, type, message, severity, timestamp) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (sensor_id, COALESCE(metric, ''), type) WHERE NOT resolved DO NOTHING RETURNING id")
FIND_OPEN = ("SELECT id, severity FROM alerts WHERE sensor_id = %s AND COALESCE(metric, '') = %s AND type = %s "
             "AND NOT resolved")
ESCALATE = "UPDATE alerts SET severity = %s, message = %s WHERE id = %s AND NOT resolved"
RESOLVE = "UPDATE alerts SET resolved = TRUE, resolved_at = %s WHERE id = %s AND NOT resolved"
INSERT_EVENT = "INSERT INTO alert_events (alert_id, event, severity, message, timestamp) VALUES (%s, %s, %s, %s, %s)"


def utc_naive(ts: float) -> datetime:
    """Epoch seconds -> naive UTC datetime (the schema's TIMESTAMP columns hold UTC)."""
    return datetime.fromtimestamp(ts, _UTC).replace(tzinfo=None)


class AlertSink(BatchingSink):
    """Evaluates readings, keeps one open alert per (sensor, metric, type), stores and announces transitions."""

    name = "alerts"

    def __init__(self, config: Config, pg_password: Secret, redis_password: Secret, *args, clock=time.time, **kwargs):
        super().__init__(*args, **kwargs)
        self.pg: PostgresConfig = config.postgres
        self.pg_password = pg_password
        self.redis_cfg: RedisConfig = config.redis
        self.redis_password = redis_password
        self.clock = clock
        self.tick_interval_s = config.processing.interval_s
        self.book = AlertBook(config.alerts.clear_readings, config.alerts.clear_seconds)
        self.rules = Rules(config.thresholds, config.detection)
        self.offline_severity = config.detection.offline_severity
        self.detectors = (Threshold(), Rate(), Outlier(), Stuck())
        self.last_seen: dict[str, float] = {}  # sensor -> wall clock when a reading of it was last evaluated
        self.sensor_info: dict[str, tuple[str, str | None]] = {}  # sensor -> (type, location), for registration
        self.stream = config.redis.key_prefix + config.redis.streams.alerts
        self.webhook = WebhookNotifier(config.alerts.webhook, config.retry, self.metrics) if config.alerts.webhook.url else None
        self.pool: ConnectionPool | None = None
        self.redis: redis.Redis | None = None
        # Scale-out: only sensors of partitions this instance owns are evaluated here (docs/operations.md).
        self.partitions = config.kafka.partitions
        self.partition_of: dict[str, int] = {}  # sensor -> the partition its readings arrived on
        self.ownership = Ownership()
        self.lock = threading.RLock()  # rebalance callbacks (consumer thread) against evaluation (this thread)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        # Created once: start() may be retried while the services come up.
        if self.pool is None:
            self.pool = ConnectionPool(kwargs=conninfo(self.pg, self.pg_password), min_size=1, max_size=2, open=True,
                                       name="alert-evaluator", timeout=10.0)
        if self.redis is None:
            self.redis = connect(self.redis_cfg, self.redis_password)
        with self.pool.connection() as conn:
            # The same load as on a partition assignment, for every sensor (nothing is owned or dropped yet).
            n = self._load_open(conn, lambda _sensor_id: True)
        if self.webhook is not None:
            self.webhook.start()
        log.info("event=sink_started sink=alerts open_alerts=%d known_sensors=%d webhook=%s", n,
                 len(self.last_seen), "on" if self.webhook else "off")

    def update_config(self, config: Config) -> None:
        """Live reload: new detector settings and hysteresis for the next batch (swapped whole, no lock needed)."""
        self.rules = Rules(config.thresholds, config.detection)
        self.offline_severity = config.detection.offline_severity
        self.book.clear_readings = config.alerts.clear_readings
        self.book.clear_seconds = config.alerts.clear_seconds
        log.info("event=alert_rules_reloaded metrics=%d sensor_overrides=%d", len(config.thresholds) + len(config.detection.metrics),
                 len(config.detection.sensors))

    def is_transient(self, err: BaseException) -> bool:
        return isinstance(err, (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, redis.ConnectionError,
                                redis.TimeoutError, redis.BusyLoadingError))

    def close(self) -> None:
        if self.webhook is not None:
            self.webhook.stop(5.0)
        if self.redis is not None:
            self.redis.close()
        if self.pool is not None:
            self.pool.close()

    # -- evaluation (once per reading, when its batch arrives) ----------------------------------
    def select(self, batch: Batch) -> Sequence[Transition]:
        """Judge the batch's readings (once, on arrival) and return the alert transitions to store."""
        with self.lock:
            return self._evaluate(batch)

    def _evaluate(self, batch: Batch) -> list[Transition]:
        rules, book, now = self.rules, self.book, self.clock()
        out: list[Transition] = []
        # (sensor, metric) pairs with an open alert: for the others a verdict without a severity changes
        # nothing, so the book is not asked (most readings of a healthy fleet).
        alerting = {(k[0], k[1]) for k in book.open}
        detectors = self.detectors
        for r in batch.readings:
            sensor_id, metric = r.sensor_id, r.metric
            if r.source is not None and sensor_id not in self.partition_of:
                self._first_reading(sensor_id, r.source.partition)
            if offline_tracked(r.sensor_type):
                self.last_seen[sensor_id] = now
            self.sensor_info[sensor_id] = (r.sensor_type, r.location)
            if (sensor_id, None) in alerting:
                self._add(out, book.resolve((sensor_id, None, "offline"), r.ts), r.sensor_type, r.location)
            mr = rules.for_metric(sensor_id, metric)
            key = (sensor_id, metric)
            is_alerting = key in alerting
            for detector, rule in zip(detectors, (mr.threshold, mr.rate, mr.outlier, mr.stuck)):
                signal = detector.evaluate(key, r.value, r.ts, rule)
                if signal is not None and (is_alerting or signal.severity is not None):
                    t = book.observe(sensor_id, metric, detector.type, signal, r.ts, r.value)
                    if t is not None:
                        self._add(out, t, r.sensor_type, r.location)
                        alerting.add(key)
                        is_alerting = True
        return out

    def tick(self) -> None:
        """Offline sensors, alerts clear for long enough, alerts resolved by an operator."""
        with self.lock:
            out = self._tick_transitions()
        try:
            if out:
                retry_call(lambda: self._store(out), operation="alerts_tick", policy=self.retry, is_transient=self.is_transient,
                           stop=self.stop_event, on_retry=lambda *_: self.metrics.retries.labels("alerts_tick").inc())
                self.after_write(out)
            with self.lock:
                self._forget_resolved_elsewhere()
        except Stopped:
            log.warning("event=alerts_tick_unstored transitions=%d", len(out))
        except Exception as err:  # noqa: BLE001 - the next tick tries again; a failing timer must not stop the readings
            if not self.is_transient(err):
                log.exception("event=alerts_tick_failed")
            else:
                log.warning("event=alerts_tick_failed error=%r", str(err)[:200])

    def _tick_transitions(self) -> list[Transition]:
        now = self.clock()
        out: list[Transition] = []
        rules = self.rules
        for sensor_id, seen in self.last_seen.items():
            limit = rules.offline_after(sensor_id)
            if limit > 0:
                signal = offline(now - seen, limit, self.offline_severity)
                if signal.severity is not None:
                    info = self.sensor_info.get(sensor_id, ("sensor", None))
                    self._add(out, self.book.observe(sensor_id, None, "offline", signal, now), *info)
        for t in self.book.due(now):
            self._add(out, t)
        return out

    # -- partition ownership (scale-out) -------------------------------------------------------
    def _partition(self, sensor_id: str) -> int:
        p = self.partition_of.get(sensor_id)
        return p if p is not None else sensor_partition(sensor_id, self.partitions)

    def _drop(self, gone) -> None:
        """Forget every sensor whose partition `gone(partition)` says is no longer ours: open alerts (they stay
        open in the database for the next owner), detector history, offline timers."""
        sensors = set(self.last_seen) | set(self.partition_of) | {k[0] for k in self.book.open}
        dropped = {s for s in sensors if gone(self._partition(s))}
        if not dropped:
            return
        for key in [k for k in self.book.open if k[0] in dropped]:
            del self.book.open[key]
        for detector in self.detectors:  # detector history is a dict keyed by (sensor, metric): rebuilt by readings
            for state in vars(detector).values():
                if isinstance(state, dict):
                    for key in [k for k in state if isinstance(k, tuple) and k[0] in dropped]:
                        del state[key]
        for s in dropped:
            self.last_seen.pop(s, None)
            self.sensor_info.pop(s, None)
            self.partition_of.pop(s, None)
        self._gauge_open()
        log.info("event=alert_state_handed_off sensors=%d", len(dropped))

    def _load_open(self, conn: psycopg.Connection, mine) -> int:
        """Open alerts and known sensors for which `mine(sensor_id)` holds, from the database. Known sensors
        count as seen now (silent ones go offline after the limit), if their type is offline-tracked at all."""
        now = self.clock()
        rows = [r for r in conn.execute(LOAD_OPEN).fetchall() if mine(r[1])]
        for sensor_id, sensor_type in conn.execute(KNOWN_SENSORS):
            if mine(sensor_id) and offline_tracked(sensor_type):
                self.last_seen.setdefault(sensor_id, now)
        self.book.load(Alert(sensor_id, metric, type_, severity, ts.replace(tzinfo=_UTC).timestamp(), msg, id_)
                       for id_, sensor_id, metric, type_, severity, msg, ts in rows if (sensor_id, metric, type_) not in self.book.open)
        self._gauge_open()
        return len(rows)

    def _first_reading(self, sensor_id: str, partition: int) -> None:
        """A sensor's first reading here: if the CRC32 guess put it elsewhere (another partitioner configured),
        its open alerts were not loaded on assignment: load them now."""
        self.partition_of[sensor_id] = partition
        if self.ownership.owned is not None and partition != sensor_partition(sensor_id, self.partitions) and self.pool:
            with self.pool.connection() as conn:
                self._load_open(conn, lambda s: s == sensor_id)

    def partitions_assigned(self, partitions: set[int]) -> None:
        """Keep only the sensors of our partitions; load open alerts of newly owned ones."""
        with self.lock:
            to_drop, to_load = self.ownership.assign(partitions)
            self._drop((lambda p: p not in partitions) if to_drop is None else (lambda p: p in to_drop))
            if to_load and self.pool is not None:
                with self.pool.connection() as conn:
                    n = self._load_open(conn, lambda s: sensor_partition(s, self.partitions) in to_load)
                log.info("event=alert_partitions_loaded partitions=%s open_alerts=%d",
                         ",".join(map(str, sorted(to_load))), n)

    def partitions_revoked(self, partitions: set[int]) -> None:
        """Hand off: the next owner loads these sensors' open alerts from the database."""
        with self.lock:
            gone = self.ownership.revoke(partitions)
            self._drop(lambda p: p in gone)

    def _add(self, out: list, t: Transition | None, sensor_type: str | None = None, location: str | None = None) -> None:
        """Queue a transition with the sensor's type and location (for registering a sensor not stored yet)."""
        if t is None:
            return
        t.context = {"type": sensor_type, "location": location} if sensor_type is not None else {}
        t.message = message(t)
        if t.event in (OPENED, ESCALATED):
            t.alert.message = t.message
        out.append(t)

    def _forget_resolved_elsewhere(self) -> None:
        assert self.pool is not None
        with self.pool.connection() as conn:
            ids = {row[0] for row in conn.execute(OPEN_IDS)}
        for a in self.book.forget(ids):
            log.info("event=alert_resolved_elsewhere alert_id=%s sensor_id=%s type=%s", a.id, a.sensor_id, a.type)
        self._gauge_open()

    # -- storing -------------------------------------------------------------------------------
    def write(self, records: Sequence[Transition]) -> None:
        self._store(records)

    def _store(self, transitions: Sequence[Transition]) -> None:
        todo = [t for t in transitions if not t.stored]
        if todo:
            assert self.pool is not None
            with self.pool.connection() as conn:
                with conn.transaction():
                    with conn.cursor() as cur:
                        self._register_sensors(cur, todo)
                        for t in todo:
                            self._store_one(cur, t)
            for t in todo:
                t.stored = True
        unpublished = [t for t in transitions if not t.published]
        if unpublished:
            self._publish(unpublished)

    def _register_sensors(self, cur: psycopg.Cursor, todo: Sequence[Transition]) -> None:
        # alerts.sensor_id references sensors, and this thread may see a new sensor before the PostgreSQL sink.
        new = {t.alert.sensor_id: t.context for t in todo if t.event == OPENED or t.alert.id is None}
        if new:
            cur.executemany(INSERT_SENSORS, [(s, c.get("type") or "sensor", c.get("location")) for s, c in sorted(new.items())])

    def _store_one(self, cur: psycopg.Cursor, t: Transition) -> None:
        a = t.alert
        at = utc_naive(t.at)
        if t.event == OPENED:
            if not self._insert_or_adopt(cur, a, t.severity, t.message, at):
                t.published = True  # already open in the database at least as severe: nothing new to announce
                return
        elif a.id is None:
            # Its opening was never stored (a tick cut short by shutdown): store it now, then this transition.
            self._insert_or_adopt(cur, a, a.severity, a.message, utc_naive(a.opened_at))
        if t.event == ESCALATED:
            cur.execute(ESCALATE, (t.severity, t.message, a.id))
        elif t.event == RESOLVED:
            cur.execute(RESOLVE, (at, a.id))
        cur.execute(INSERT_EVENT, (a.id, t.event, t.severity, t.message, at))

    def _insert_or_adopt(self, cur: psycopg.Cursor, a: Alert, severity: str, message_: str, at: datetime) -> bool:
        """Insert the open alert and set its id; if one is already open (stored before a crash, or by another
        instance) adopt it, raising its severity if ours is worse. False if the stored one already says it all."""
        row = cur.execute(INSERT_ALERT, (a.sensor_id, a.metric, a.type, message_, severity, at)).fetchone()
        if row is not None:
            a.id = row[0]
            return True
        a.id, stored = cur.execute(FIND_OPEN, (a.sensor_id, a.metric or "", a.type)).fetchone()
        if SEVERITY_RANK.get(stored, 0) >= SEVERITY_RANK[severity]:
            a.severity = stored
            return False
        cur.execute(ESCALATE, (severity, message_, a.id))
        return True

    def _publish(self, transitions: Sequence[Transition]) -> None:
        assert self.redis is not None
        pipe = self.redis.pipeline(transaction=False)
        payloads = []
        for t in transitions:
            a = t.alert
            payload = {"event": t.event, "alert_id": a.id, "sensor_id": a.sensor_id, "metric": a.metric, "type": a.type,
                       "severity": t.severity, "message": t.message, "timestamp": t.at, "value": t.value}
            payloads.append(payload)
            pipe.xadd(self.stream, {k: ("" if v is None else repr(v) if isinstance(v, float) else v) for k, v in payload.items()},
                      maxlen=self.redis_cfg.stream_maxlen, approximate=True)
        pipe.execute()
        for t, payload in zip(transitions, payloads):
            t.published = True
            if self.webhook is not None:
                self.webhook.offer(payload)

    def after_write(self, records: Sequence[Transition]) -> None:
        for t in records:
            self.metrics.alert_transitions.labels(t.alert.type, t.event, t.severity).inc()
            log.info("event=alert_%s alert_id=%s sensor_id=%s metric=%s type=%s severity=%s", t.event, t.alert.id,
                     t.alert.sensor_id, t.alert.metric or "-", t.alert.type, t.severity)
        self._gauge_open()

    def _gauge_open(self) -> None:
        counts: dict[str, int] = {"threshold": 0, "rate": 0, "outlier": 0, "stuck": 0, "offline": 0}
        for a in self.book.open.values():
            counts[a.type] = counts.get(a.type, 0) + 1
        for type_, n in counts.items():
            self.metrics.alerts_open.labels(type_).set(n)
