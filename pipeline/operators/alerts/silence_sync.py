"""Keeps the daemon's Silences in step with the database: snoozes and acknowledgements at start and on every
alert tick, sensor locations at start (for maintenance windows by location)."""
from __future__ import annotations

from datetime import timezone

from psycopg_pool import ConnectionPool

from .silences import Silences, Snooze

_UTC = timezone.utc
ACTIVE_SNOOZES = ("SELECT id, until, alert_id, sensor_id, metric, type FROM alert_snoozes "
                  "WHERE ended_at IS NULL AND until > now() AT TIME ZONE 'utc'")
# Resolved ones stay for a while: their resolution may still be on its way to the notifier. With each, the
# severity it had when acknowledged (its latest `ack` event; the row's own severity has escalated since, maybe).
ACKNOWLEDGED = ("SELECT a.id, COALESCE((SELECT e.severity FROM alert_events e WHERE e.alert_id = a.id AND e.event = 'ack' "
                "ORDER BY e.id DESC LIMIT 1), a.severity) FROM alerts a WHERE a.acknowledged_at IS NOT NULL AND "
                "(NOT COALESCE(a.resolved, false) OR a.resolved_at > now() AT TIME ZONE 'utc' - interval '1 hour')")
LOCATIONS = "SELECT sensor_id, location FROM sensors WHERE location IS NOT NULL"


def load(pool: ConnectionPool, silences: Silences) -> None:
    """Replace the snoozes and acknowledgements with the database's (changes told meanwhile are kept)."""
    since = silences.mark()
    with pool.connection() as conn:
        snoozes = [Snooze(id_, until.replace(tzinfo=_UTC).timestamp(), alert_id, sensor_id, metric, type_)
                   for id_, until, alert_id, sensor_id, metric, type_ in conn.execute(ACTIVE_SNOOZES)]
        acknowledged = [(alert_id, severity) for alert_id, severity in conn.execute(ACKNOWLEDGED)]
    silences.replace(snoozes, acknowledged, since)


def locations(pool: ConnectionPool) -> dict[str, str]:
    """sensor_id -> location of every registered sensor that has one."""
    with pool.connection() as conn:
        return {sid: loc for sid, loc in conn.execute(LOCATIONS)}
