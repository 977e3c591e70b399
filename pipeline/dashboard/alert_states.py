"""An alert's state as the alert list shows and filters it: acknowledged, snoozed (by a snooze of the alert, its
sensor or its rule), flapping, in maintenance. SQL over the row `alerts`, shared by the store and the workflow."""
from __future__ import annotations

from ..clients.postgres import epoch

NOW = "(now() AT TIME ZONE 'utc')"
# A snooze in force over the alert row `alerts` (the same rule as Snooze.matches).
SNOOZE_COVERS = (f"s.ended_at IS NULL AND s.until > {NOW} AND (s.alert_id = alerts.id OR (s.alert_id IS NULL "
                 "AND (s.sensor_id IS NULL OR s.sensor_id = alerts.sensor_id) AND (s.metric IS NULL OR s.metric = alerts.metric) "
                 "AND (s.type IS NULL OR s.type = alerts.type)))")
SNOOZED = f"EXISTS (SELECT 1 FROM alert_snoozes s WHERE {SNOOZE_COVERS})"
FLAPPING = "EXISTS (SELECT 1 FROM alert_events e WHERE e.alert_id = alerts.id AND e.event = 'flapping')"
UNRESOLVED = "NOT COALESCE(alerts.resolved, false)"
# The alert list's `state` filter: open = needs someone (neither acknowledged nor snoozed).
STATES = {
    "open": f"{UNRESOLVED} AND alerts.acknowledged_at IS NULL AND NOT {SNOOZED}",
    "acknowledged": f"{UNRESOLVED} AND alerts.acknowledged_at IS NOT NULL",
    "snoozed": f"{UNRESOLVED} AND {SNOOZED}",
    "flapping": f"{UNRESOLVED} AND {FLAPPING}",
    "resolved": f"NOT ({UNRESOLVED})",
}
STATE_COLUMNS = (f"acknowledged_at, acknowledged_by, "
                 f"(SELECT max(s.until) FROM alert_snoozes s WHERE {SNOOZE_COVERS}) AS snoozed_until, "
                 f"{FLAPPING} AS flapping, "
                 "EXISTS (SELECT 1 FROM alert_events e WHERE e.alert_id = alerts.id AND e.silenced = 'maintenance') AS maintenance")


def alert_state(row: dict) -> dict:
    """The state columns of an alert row as the API shows them (epoch seconds, booleans)."""
    row["acknowledged_at"] = epoch(row.get("acknowledged_at"))
    row["snoozed_until"] = epoch(row.get("snoozed_until"))
    row["acknowledged"] = row["acknowledged_at"] is not None
    return row
