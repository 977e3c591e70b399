"""The alert store: alert transitions into PostgreSQL (`alerts`, `alert_events`), the Redis stream and the notifier.

Only writes (and reads back what it wrote, to resume after a restart). At most one open alert per
(sensor, metric, type) is guaranteed by the partial unique index `alerts_one_open`: an alert already open
(stored before a crash, or by another instance) is adopted, not doubled.

Redis stream <alerts stream> (under redis.key_prefix): XADD event, alert_id, sensor_id, metric, type,
severity, message, timestamp, value: one entry per transition.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable, Protocol, Sequence

import psycopg
import redis
from psycopg_pool import ConnectionPool

from ...config import PostgresConfig, RedisConfig, Secret
from ...observability.metrics import Metrics
from .silences import Silences
from .lifecycle import ESCALATED, FLAPPING, OPENED, RESOLVED, SEVERITY_RANK, Alert, Transition
from ...clients.postgres import open_pool, utc_naive
from ...storage.sensor_rows import INSERT_SENSORS
from ...clients.redis import connect
from ...runtime.supervisor import Spawn, plain_thread

_UTC = timezone.utc


class AlertNotifier(Protocol):
    """What the store needs of the notification channels (pipeline/sinks/notify.AlertNotifier is one)."""

    channels: dict  # name -> channel

    def start(self) -> None: ...

    def stop(self, timeout: float) -> None: ...

    def offer(self, payload: dict) -> None: ...
LOAD_OPEN = ("SELECT id, sensor_id, metric, type, severity, message, timestamp FROM alerts "
             "WHERE NOT resolved ORDER BY id")
LOAD_OPEN_OF = ("SELECT id, sensor_id, metric, type, severity, message, timestamp FROM alerts "
                "WHERE NOT resolved AND sensor_id = ANY(%s) ORDER BY id")  # the alerts_one_open index
OPEN_IDS = "SELECT id FROM alerts WHERE NOT resolved"
KNOWN_SENSORS = "SELECT sensor_id, type FROM sensors"
KNOWN_SENSORS_OF = "SELECT sensor_id, type FROM sensors WHERE sensor_id = ANY(%s)"  # its primary key
INSERT_ALERT = ("INSERT INTO alerts (sensor_id, metric, type, message, severity, timestamp) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (sensor_id, COALESCE(metric, ''), type) WHERE NOT resolved DO NOTHING RETURNING id")
FIND_OPEN = ("SELECT id, severity FROM alerts WHERE sensor_id = %s AND COALESCE(metric, '') = %s AND type = %s "
             "AND NOT resolved")
ESCALATE = "UPDATE alerts SET severity = %s, message = %s WHERE id = %s AND NOT resolved"
RESOLVE = "UPDATE alerts SET resolved = TRUE, resolved_at = %s WHERE id = %s AND NOT resolved"
INSERT_EVENT = ("INSERT INTO alert_events (alert_id, event, severity, message, timestamp, silenced) "
                "VALUES (%s, %s, %s, %s, %s, %s)")


class AlertStore:
    """Stores and announces transitions; each transition remembers what is done (stored, published), so a
    retried write never stores or announces it twice."""

    def __init__(self, pg: PostgresConfig, pg_password: Secret, rcfg: RedisConfig, redis_password: Secret,
                 metrics: Metrics, spawn: Spawn = plain_thread, notifier: AlertNotifier | None = None,
                 silences: Silences | None = None):
        self.pg, self.pg_password = pg, pg_password
        self.redis_cfg, self.redis_password = rcfg, redis_password
        self.stream = rcfg.key_prefix + rcfg.streams.alerts
        self.notifier = notifier  # notification channels (an AlertNotifier); None: none configured
        self.pool: ConnectionPool | None = None
        self.redis: redis.Redis | None = None
        self.silences = silences  # why a transition is not notified (flagged on its event); None: never silenced

    def start(self) -> None:
        # Created once: start() may be retried while the services come up.
        if self.pool is None:
            self.pool = open_pool(self.pg, self.pg_password, "alert-evaluator", min_size=1, max_size=2)
        if self.redis is None:
            self.redis = connect(self.redis_cfg, self.redis_password)

    def start_notifications(self) -> None:
        if self.notifier is not None:
            self.notifier.start()

    def close(self) -> None:
        if self.notifier is not None:
            self.notifier.stop(5.0)
        if self.redis is not None:
            self.redis.close()
        if self.pool is not None:
            self.pool.close()

    # -- reading back -------------------------------------------------------------------------------
    def load_open(self, mine: Callable[[str], bool]) -> tuple[list[Alert], list[tuple[str, str | None]]]:
        """Open alerts and known sensors (id, type) of the sensors for which `mine(sensor_id)` holds."""
        assert self.pool is not None
        with self.pool.connection() as conn:
            rows = [r for r in conn.execute(LOAD_OPEN).fetchall() if mine(r[1])]
            sensors = [(s, t) for s, t in conn.execute(KNOWN_SENSORS) if mine(s)]
        alerts = [Alert(sensor_id, metric, type_, severity, ts.replace(tzinfo=_UTC).timestamp(), msg, id_)
                  for id_, sensor_id, metric, type_, severity, msg, ts in rows]
        return alerts, sensors

    def load_open_of(self, sensor_ids: list[str]) -> list[Alert]:
        """The open alerts of these sensors (one statement, by index)."""
        assert self.pool is not None
        with self.pool.connection() as conn:
            rows = conn.execute(LOAD_OPEN_OF, (sensor_ids,)).fetchall()
        return [Alert(sensor_id, metric, type_, severity, ts.replace(tzinfo=_UTC).timestamp(), msg, id_)
                for id_, sensor_id, metric, type_, severity, msg, ts in rows]

    def load_open_for(self, sensor_ids: list[str]) -> tuple[list[Alert], list[tuple[str, str | None]]]:
        """`load_open` for a list of sensors: two statements by index, whatever the size of the fleet."""
        assert self.pool is not None
        with self.pool.connection() as conn:
            sensors = [(s, t) for s, t in conn.execute(KNOWN_SENSORS_OF, (sensor_ids,))]
        return self.load_open_of(sensor_ids), sensors

    def open_ids(self) -> set[int]:
        """Ids of the alerts open in the database (an operator may have resolved some)."""
        assert self.pool is not None
        with self.pool.connection() as conn:
            return {row[0] for row in conn.execute(OPEN_IDS)}

    # -- writing ------------------------------------------------------------------------------------
    def store(self, transitions: Sequence[Transition]) -> None:
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

    @staticmethod
    def _register_sensors(cur: psycopg.Cursor, todo: Sequence[Transition]) -> None:
        # alerts.sensor_id references sensors, and this thread may see a new sensor before the PostgreSQL sink.
        new = {t.alert.sensor_id: t.context for t in todo if t.event == OPENED or t.alert.id is None}
        if new:
            ids = sorted(new)
            cur.execute(INSERT_SENSORS, (ids, [new[s].get("type") or "sensor" for s in ids], [new[s].get("location") for s in ids]))

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
        if t.event in (ESCALATED, FLAPPING):
            # flapping has no column: the alert's message says so (and its event row), the severity is unchanged
            cur.execute(ESCALATE, (t.severity, t.message, a.id))
        elif t.event == RESOLVED:
            cur.execute(RESOLVE, (at, a.id))
        silenced = None if self.silences is None else self.silences.silenced(
            {"event": t.event, "alert_id": a.id, "sensor_id": a.sensor_id, "metric": a.metric, "type": a.type}, t.at)
        cur.execute(INSERT_EVENT, (a.id, t.event, t.severity, t.message, at, silenced))

    @staticmethod
    def _insert_or_adopt(cur: psycopg.Cursor, a: Alert, severity: str, message_: str, at: datetime) -> bool:
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
        pipe = self.redis.pipeline(transaction=True)
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
            if self.notifier is not None:
                self.notifier.offer(payload)
