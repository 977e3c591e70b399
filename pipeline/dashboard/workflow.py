"""The operator's changes to alerts in PostgreSQL: acknowledge, snooze (an alert, or a sensor and/or a rule),
unsnooze; each one row in `alert_events` with who and a note, in the same transaction.

After a change is committed, the in-process Silences (pipeline/operators/alerts/silences.py) is told, so the
notifier stops announcing at once; other instances learn it from the database on their next alert tick.
What the alert list shows of these states is alert_states.py.
"""
from __future__ import annotations

import logging

from psycopg.rows import dict_row

from ..clients.errors import POSTGRES_AWAY
from ..clients.postgres import epoch
from ..operators.alerts.silences import Snooze
from .alert_states import NOW
from .store import Store, Unavailable

log = logging.getLogger(__name__)

ALERT = ("SELECT id, sensor_id, metric, type, severity, COALESCE(resolved, false) AS resolved, acknowledged_at, "
         "acknowledged_by FROM alerts WHERE id = %s FOR UPDATE")
ACK = f"UPDATE alerts SET acknowledged_at = {NOW}, acknowledged_by = %s WHERE id = %s"
INSERT_SNOOZE = (f"INSERT INTO alert_snoozes (alert_id, sensor_id, metric, type, until, created_by, note) "
                 f"VALUES (%s, %s, %s, %s, {NOW} + make_interval(secs => %s), %s, %s) RETURNING *")
END_SNOOZE = (f"UPDATE alert_snoozes SET ended_at = {NOW}, ended_by = %s WHERE id = %s AND ended_at IS NULL "
              f"AND until > {NOW} RETURNING *")
SNOOZE = "SELECT * FROM alert_snoozes WHERE id = %s"
ACTIVE = f"SELECT * FROM alert_snoozes WHERE ended_at IS NULL AND until > {NOW} ORDER BY until, id LIMIT %s"
EVENT = (f"INSERT INTO alert_events (alert_id, event, severity, message, timestamp, who, note, snooze_id) "
         f"VALUES (%s, %s, %s, %s, {NOW}, %s, %s, %s)")


def snooze_row(row: dict) -> dict:
    for key in ("until", "created_at", "ended_at"):
        row[key] = epoch(row[key])
    return row


def describe_scope(s: dict) -> str:
    if s["alert_id"] is not None:
        return f"alert {s['alert_id']}"
    parts = [f"sensor {s['sensor_id']}" if s["sensor_id"] else None, f"type {s['type']}" if s["type"] else None,
             f"metric {s['metric']}" if s["metric"] else None]
    return ", ".join(p for p in parts if p)


def as_snooze(s: dict) -> Snooze:
    return Snooze(s["id"], s["until"], s["alert_id"], s["sensor_id"], s["metric"], s["type"])


class AlertWorkflow:
    """Acknowledge, snooze, unsnooze: PostgreSQL first, then the in-process Silences (if any)."""

    def __init__(self, store: Store, silences=None):
        self.store = store
        self.silences = silences

    def _transaction(self, fn):
        try:
            with self.store.pool.connection(timeout=5.0) as conn:
                with conn.transaction():
                    with conn.cursor(row_factory=dict_row) as cur:
                        return fn(cur)
        except POSTGRES_AWAY as err:
            raise Unavailable("postgres", str(err).strip()[:300]) from None

    def acknowledge(self, alert_id: int, who: str, note: str) -> tuple[str, dict | None]:
        """("acknowledged", alert), ("not_found", None), ("already_resolved" | "already_acknowledged", alert)."""
        def run(cur):
            alert = cur.execute(ALERT, (alert_id,)).fetchone()
            if alert is None:
                return "not_found", None
            if alert["resolved"]:
                return "already_resolved", alert
            if alert["acknowledged_at"] is not None:
                return "already_acknowledged", alert
            cur.execute(ACK, (who, alert_id))
            cur.execute(EVENT, (alert_id, "ack", alert["severity"], f"acknowledged by {who}", who, note, None))
            alert["acknowledged_by"] = who
            return "acknowledged", alert

        outcome, alert = self._transaction(run)
        if outcome == "acknowledged":
            if self.silences is not None:
                self.silences.acknowledge(alert_id, alert["severity"])  # a worse state is still notified
            log.info("event=alert_acknowledged alert_id=%d who=%r", alert_id, who)
        return outcome, _plain(alert)

    def snooze_alert(self, alert_id: int, duration_s: float, who: str, note: str) -> tuple[str, dict | None]:
        """("snoozed", snooze), ("not_found", None) or ("already_resolved", alert)."""
        def run(cur):
            alert = cur.execute(ALERT, (alert_id,)).fetchone()
            if alert is None:
                return "not_found", None
            if alert["resolved"]:
                return "already_resolved", alert
            return "snoozed", self._snooze(cur, (alert_id, None, None, None), duration_s, who, note, alert["severity"])

        outcome, row = self._transaction(run)
        if outcome == "snoozed":
            self._told(row)
        return outcome, _plain(row)

    def snooze(self, sensor_id: str | None, metric: str | None, type_: str | None, duration_s: float, who: str,
               note: str) -> dict:
        """Snooze every alert of a sensor and/or a rule (metric and/or type); returns the snooze."""
        row = self._transaction(lambda cur: self._snooze(cur, (None, sensor_id, metric, type_), duration_s, who, note, None))
        self._told(row)
        return row

    def _snooze(self, cur, scope: tuple, duration_s: float, who: str, note: str, severity: str | None) -> dict:
        s = snooze_row(cur.execute(INSERT_SNOOZE, (*scope, duration_s, who, note)).fetchone())
        cur.execute(EVENT, (s["alert_id"], "snooze", severity, f"{describe_scope(s)} snoozed by {who} for {duration_s:g} s",
                            who, note, s["id"]))
        return s

    def _told(self, s: dict) -> None:
        if self.silences is not None:
            self.silences.snooze(as_snooze(s))
        log.info("event=alert_snoozed snooze_id=%d scope=%r until=%.0f who=%r", s["id"], describe_scope(s), s["until"],
                 s["created_by"])

    def unsnooze(self, snooze_id: int, who: str, note: str) -> tuple[str, dict | None]:
        """("unsnoozed", snooze), ("not_found", None) or ("already_ended", snooze)."""
        def run(cur):
            row = cur.execute(END_SNOOZE, (who, snooze_id)).fetchone()
            if row is None:
                old = cur.execute(SNOOZE, (snooze_id,)).fetchone()
                return ("already_ended", snooze_row(old)) if old else ("not_found", None)
            s = snooze_row(row)
            cur.execute(EVENT, (s["alert_id"], "unsnooze", None, f"{describe_scope(s)} unsnoozed by {who}", who, note, s["id"]))
            return "unsnoozed", s

        outcome, row = self._transaction(run)
        if outcome == "unsnoozed":
            if self.silences is not None:
                self.silences.unsnooze(snooze_id)
            log.info("event=alert_unsnoozed snooze_id=%d who=%r", snooze_id, who)
        return outcome, row

    def snoozes(self, limit: int = 200) -> list[dict]:
        """The snoozes in force, ending soonest first."""
        return [snooze_row(r) for r in self.store._query(ACTIVE, (limit,), row_factory=dict_row)]


def _plain(row: dict | None) -> dict | None:
    """A row for JSON: timestamps as epoch seconds."""
    if row is None:
        return None
    return {k: (epoch(v) if hasattr(v, "isoformat") else v) for k, v in row.items()}
