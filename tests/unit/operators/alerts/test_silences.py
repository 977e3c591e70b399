"""Silences, pure: snoozes of an alert, a sensor or a rule and their expiry, acknowledgements, maintenance
windows (once, and recurring by cron in a time zone), and a refresh from the database that keeps changes
told meanwhile."""
from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from pipeline.config import ConfigError, parse
from pipeline.config.alerting import MaintenanceWindow
from pipeline.operators.alerts.silences import Silences, Snooze

T0 = datetime(2026, 12, 6, 1, 0, tzinfo=timezone.utc).timestamp()  # a Sunday, 01:00 UTC


def payload(alert_id=7, sensor_id="hall-1", metric="temperature", type_="threshold", event="escalated") -> dict:
    return {"event": event, "alert_id": alert_id, "sensor_id": sensor_id, "metric": metric, "type": type_,
            "severity": "critical", "message": "m", "timestamp": T0, "value": 1.0}


def utc(*args) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


def test_nothing_silenced_by_default():
    assert Silences().silenced(payload(), T0) is None


def test_alert_snooze_covers_that_alert_only_until_it_expires():
    s = Silences()
    s.snooze(Snooze(1, T0 + 600, alert_id=7))
    assert s.silenced(payload(), T0) == "snoozed"
    assert s.silenced(payload(), T0 + 599.9) == "snoozed"
    assert s.silenced(payload(), T0 + 600) is None  # expired: notified again
    assert s.silenced(payload(alert_id=8), T0) is None  # same sensor and rule, another alert
    assert s.silenced(payload(alert_id=None, event="opened"), T0) is None


def test_sensor_snooze_covers_every_alert_of_the_sensor():
    s = Silences()
    s.snooze(Snooze(2, T0 + 60, sensor_id="hall-1"))
    assert s.silenced(payload(alert_id=None, event="opened"), T0) == "snoozed"
    assert s.silenced(payload(metric=None, type_="offline"), T0) == "snoozed"
    assert s.silenced(payload(sensor_id="hall-2"), T0) is None


def test_rule_snooze_covers_metric_and_type_on_any_sensor():
    s = Silences()
    s.snooze(Snooze(3, T0 + 60, metric="humidity", type="stuck"))
    assert s.silenced(payload(sensor_id="x", metric="humidity", type_="stuck"), T0) == "snoozed"
    assert s.silenced(payload(metric="humidity", type_="threshold"), T0) is None
    assert s.silenced(payload(metric="temperature", type_="stuck"), T0) is None
    s.snooze(Snooze(4, T0 + 60, type="offline"))  # a type alone: every offline alert
    assert s.silenced(payload(metric=None, type_="offline", sensor_id="roof"), T0) == "snoozed"
    s.snooze(Snooze(5, T0 + 60, sensor_id="roof", metric="co2"))  # sensor and metric together: both must match
    assert s.silenced(payload(sensor_id="roof", metric="co2", type_="rate"), T0) == "snoozed"
    assert s.silenced(payload(sensor_id="hall-1", metric="co2", type_="rate"), T0) is None


def test_unsnooze_ends_it_and_snoozes_lists_those_in_force():
    s = Silences()
    s.snooze(Snooze(1, T0 + 600, alert_id=7))
    s.snooze(Snooze(2, T0 + 60, sensor_id="hall-1"))
    s.snooze(Snooze(3, T0 - 1, sensor_id="old"))
    assert [x.id for x in s.snoozes(T0)] == [2, 1]
    assert s.snoozed_until(7, "hall-1", "temperature", "threshold", T0) == T0 + 600
    s.unsnooze(1)
    s.unsnooze(99)  # unknown: nothing happens
    assert s.silenced(payload(), T0 + 100) is None
    assert s.silenced(payload(), T0) == "snoozed"  # the sensor snooze still holds


def test_acknowledged_alert_is_silenced_for_every_event_including_resolution():
    s = Silences()
    s.acknowledge(7)
    for event in ("escalated", "flapping", "resolved"):
        assert s.silenced(payload(event=event), T0) == "acknowledged"
    assert s.silenced(payload(alert_id=8), T0) is None
    s.snooze(Snooze(1, T0 + 60, alert_id=7))
    assert s.silenced(payload(), T0) == "acknowledged"  # the acknowledgement says more than the snooze


def test_an_acknowledgement_hides_the_severity_acknowledged_not_a_worse_one():
    s = Silences()
    s.acknowledge(7, "warning")
    warning = {**payload(event="flapping"), "severity": "warning"}
    assert s.silenced(warning, T0) == "acknowledged"
    assert s.silenced({**warning, "event": "resolved"}, T0) == "acknowledged"
    assert s.silenced(payload(event="escalated"), T0) is None  # to critical: news, notified
    assert s.silenced(payload(event="resolved"), T0) is None  # the critical's resolution too
    s.acknowledge(7, "critical")  # acknowledged again at critical: hidden from then on
    assert s.silenced(payload(event="resolved"), T0) == "acknowledged"
    # From the database: (id, severity when acknowledged)
    s.replace([], [(7, "warning"), (8, "critical")], s.mark())
    assert s.silenced(payload(), T0) is None and s.silenced(payload(alert_id=8), T0) == "acknowledged"
    assert s.silenced({**payload(alert_id=9), "severity": "info"}, T0) is None


def test_replace_keeps_changes_told_after_the_query_began():
    s = Silences()
    s.snooze(Snooze(1, T0 + 600, alert_id=7))
    since = s.mark()  # the refresh begins its query ...
    s.snooze(Snooze(2, T0 + 600, sensor_id="roof"))  # ... the API commits a snooze and tells us meanwhile ...
    s.acknowledge(9)
    s.replace([Snooze(1, T0 + 600, alert_id=7)], [], since)  # ... the query did not see them
    assert s.silenced(payload(alert_id=None, sensor_id="roof"), T0) == "snoozed"
    assert s.silenced(payload(alert_id=9), T0) == "acknowledged"
    # The next refresh sees them in the database; what it no longer lists (ended elsewhere) goes.
    s.replace([Snooze(2, T0 + 600, sensor_id="roof")], [9], s.mark())
    assert s.silenced(payload(), T0) is None
    s.replace([], [], s.mark())
    assert s.silenced(payload(alert_id=None, sensor_id="roof"), T0) is None
    assert s.silenced(payload(alert_id=9), T0) is None  # the acknowledgement ended elsewhere


def window(**kw) -> MaintenanceWindow:
    return MaintenanceWindow(**{"name": "w", **kw})


def test_one_time_window_by_sensor_glob():
    s = Silences([window(sensors="hall-*", start="2026-12-06T00:30:00Z", end="2026-12-06T02:00:00Z")])
    assert s.silenced(payload(), T0) == "maintenance"
    assert s.maintenance("hall-1", T0) == "w"
    assert s.silenced(payload(sensor_id="roof"), T0) is None
    assert s.silenced(payload(), utc(2026, 12, 6, 0, 29)) is None
    assert s.silenced(payload(), utc(2026, 12, 6, 2, 0)) is None  # the end is not inside


def test_window_by_location_uses_locate_and_both_must_match():
    where = {"hall-1": "hall", "roof": "roof"}
    s = Silences([window(location="hall", start="2026-12-06T00:00:00+00:00", end="2026-12-06T03:00:00+00:00")],
                 locate=where.get)
    assert s.silenced(payload(sensor_id="hall-1"), T0) == "maintenance"
    assert s.silenced(payload(sensor_id="roof"), T0) is None
    assert s.silenced(payload(sensor_id="unknown"), T0) is None
    both = Silences([window(sensors="hall-*", location="roof", start="2026-12-06T00:00:00Z", end="2026-12-06T03:00:00Z")],
                    locate=where.get)
    assert both.silenced(payload(sensor_id="hall-1"), T0) is None
    assert Silences([window(location="hall", start="2026-12-06T00:00:00Z", end="2026-12-06T03:00:00Z")]).silenced(
        payload(), T0) is None  # no way to know locations: a window by location matches nothing


def test_recurring_window_by_cron_and_duration():
    s = Silences([window(sensors="*", cron="0 2 * * 0", duration_s=3600)])  # Sundays 02:00-03:00 UTC
    assert s.silenced(payload(), utc(2026, 12, 6, 1, 59)) is None
    assert s.silenced(payload(), utc(2026, 12, 6, 2, 0)) == "maintenance"
    assert s.silenced(payload(), utc(2026, 12, 6, 2, 59, 59)) == "maintenance"
    assert s.silenced(payload(), utc(2026, 12, 6, 3, 0)) is None
    assert s.silenced(payload(), utc(2026, 12, 13, 2, 30)) == "maintenance"  # next Sunday
    assert s.silenced(payload(), utc(2026, 12, 7, 2, 30)) is None  # a Monday


def test_recurring_window_crossing_midnight_and_in_a_time_zone():
    # Every day 23:30 Berlin time for two hours (CET in December: UTC+1).
    s = Silences([window(sensors="*", cron="30 23 * * *", duration_s=7200, timezone="Europe/Berlin")])
    assert s.silenced(payload(), utc(2026, 12, 6, 22, 29)) is None
    assert s.silenced(payload(), utc(2026, 12, 6, 22, 30)) == "maintenance"
    assert s.silenced(payload(), utc(2026, 12, 7, 0, 29)) == "maintenance"  # past midnight, still inside
    assert s.silenced(payload(), utc(2026, 12, 7, 0, 30)) is None
    summer = datetime(2026, 7, 1, 23, 45, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()  # CEST
    assert s.silenced(payload(), summer) == "maintenance"


def test_reconfigure_swaps_the_windows():
    s = Silences([window(sensors="*", cron="* * * * *", duration_s=60)])
    assert s.silenced(payload(), T0) == "maintenance"
    s.reconfigure([])
    assert s.silenced(payload(), T0) is None


def test_maintenance_windows_in_config_are_checked_naming_the_key():
    ok = parse({"alerts": {"maintenance": [{"name": "sunday", "sensors": "hall-*", "cron": "0 2 * * sun",
                                            "duration_s": 3600}]}}, {})
    assert ok.alerts.maintenance[0].name == "sunday"
    bad = [({"name": "a", "cron": "0 2 * * 0", "duration_s": 60}, "sensors"),
           ({"name": "a", "sensors": "*", "cron": "0 25 * * *", "duration_s": 60}, "hour"),
           ({"name": "a", "sensors": "*", "cron": "0 2 * *", "duration_s": 60}, "5 fields"),
           ({"name": "a", "sensors": "*", "cron": "0 2 * * 0"}, "duration_s"),
           ({"name": "a", "sensors": "*", "start": "2026-12-06T03:00:00Z", "end": "2026-12-06T01:00:00Z"}, "before"),
           ({"name": "a", "sensors": "*", "start": "tomorrow", "end": "2026-12-06T01:00:00Z"}, "ISO-8601"),
           ({"name": "a", "sensors": "*", "start": "2026-12-06T00:00:00Z", "end": "2026-12-06T01:00:00Z",
             "cron": "0 2 * * 0", "duration_s": 60}, "either"),
           ({"name": "a", "sensors": "*", "cron": "0 2 * * 0", "duration_s": 60, "timezone": "Mars/Olympus"}, "timezone")]
    for entry, needle in bad:
        with pytest.raises(ConfigError) as err:
            parse({"alerts": {"maintenance": [{"name": "fine", "sensors": "*", "cron": "* * * * *", "duration_s": 1},
                                              entry]}}, {})
        assert str(err.value).startswith("alerts.maintenance[1]: ") and needle in str(err.value), str(err.value)
