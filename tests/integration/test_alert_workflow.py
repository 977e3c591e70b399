"""The operator's workflow against the real PostgreSQL through the Flask app: acknowledge, snooze an alert, a
sensor or a rule, unsnooze, the alert list by state, the token, the events with who and note, and the
in-process Silences told at once; the alert store flags what it stores while silenced."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from pipeline.app.build import alert_sections
from pipeline.operators.alerts.lifecycle import FLAPPING, OPENED, Alert, Transition
from pipeline.operators.alerts.silence_sync import load as load_silences
from pipeline.operators.alerts.silences import Silences
from tests.integration.test_dashboard_data import BEARER, make_client

NOW = time.time()
WHO = {"who": "maria", "note": "on it, ticket OPS-12"}


@pytest.fixture
def flow(env):
    settings = env.migrate()
    with env.db() as conn:
        for sid, loc in (("hall-1", "hall"), ("hall-2", "hall"), ("roof", "roof")):
            conn.execute("INSERT INTO sensors (sensor_id, type, location) VALUES (%s, 'environment', %s)", (sid, loc))

        def alert(sid, severity, metric, kind, age_s, resolved=False):
            return conn.execute(
                "INSERT INTO alerts (sensor_id, metric, type, message, severity, timestamp, resolved, resolved_at) VALUES "
                "(%s, %s, %s, 'msg', %s, to_timestamp(%s) AT TIME ZONE 'utc', %s, "
                " CASE WHEN %s THEN now() AT TIME ZONE 'utc' END) RETURNING id",
                (sid, metric, kind, severity, NOW - age_s, resolved, resolved)).fetchone()[0]

        ids = {"hot": alert("hall-1", "critical", "temperature", "threshold", 60),
               "wet": alert("hall-1", "warning", "humidity", "threshold", 30),
               "rate": alert("hall-2", "warning", "temperature", "rate", 20),
               "roof": alert("roof", "info", None, "offline", 10),
               "flappy": alert("roof", "warning", "humidity", "threshold", 5),
               "done": alert("hall-2", "warning", "humidity", "threshold", 900, resolved=True)}
        conn.execute("INSERT INTO alert_events (alert_id, event, severity, message, timestamp) VALUES "
                     "(%s, 'flapping', 'warning', 'flapping', now() AT TIME ZONE 'utc')", (ids["flappy"],))
    client, store, metrics = make_client(env, settings)
    silences = Silences()
    client.application.extensions["dashboard"].view.silences = silences
    yield SimpleNamespace(settings=settings, client=client, store=store, ids=ids, silences=silences)
    store.close()


def state_ids(client, state: str) -> set[int]:
    r = client.get(f"/api/alerts?state={state}&limit=100")
    assert r.status_code == 200, r.data
    return {a["id"] for a in r.json["alerts"]}


def events(env, sql_where: str, params=()) -> list[tuple]:
    return env.query(f"SELECT alert_id, event, who, note, snooze_id, severity FROM alert_events WHERE {sql_where} ORDER BY id",
                     params)


def payload(alert_id, sensor_id, metric, type_, event="escalated") -> dict:
    return {"event": event, "alert_id": alert_id, "sensor_id": sensor_id, "metric": metric, "type": type_,
            "severity": "critical", "message": "m", "timestamp": NOW, "value": 1.0}


def test_writes_need_the_token_and_who(flow, env):
    c, i = flow.client, flow.ids
    assert c.post(f"/api/alerts/{i['hot']}/ack", json=WHO).status_code == 401
    assert c.post(f"/api/alerts/{i['hot']}/snooze", json={**WHO, "duration_s": 60}).status_code == 401
    assert c.post("/api/snoozes", json={**WHO, "sensor_id": "hall-1", "duration_s": 60}).status_code == 401
    assert c.delete("/api/snoozes/1", json=WHO).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert c.post(f"/api/alerts/{i['hot']}/ack", json=WHO, headers=wrong).status_code == 401
    r = c.post(f"/api/alerts/{i['hot']}/ack", json={"note": "x"}, headers=BEARER)
    assert r.status_code == 400 and r.json["parameter"] == "who"
    r = c.post(f"/api/alerts/{i['hot']}/snooze", json={**WHO, "duration_s": 0}, headers=BEARER)
    assert r.status_code == 400 and r.json["parameter"] == "duration_s"
    r = c.post("/api/snoozes", json={**WHO, "duration_s": 60}, headers=BEARER)
    assert r.status_code == 400 and r.json["parameter"] == "sensor_id"
    assert state_ids(c, "acknowledged") == set() and state_ids(c, "snoozed") == set()
    assert events(env, "event IN ('ack', 'snooze')") == []


def test_acknowledge_records_who_and_note_and_tells_silences(flow, env):
    c, i = flow.client, flow.ids
    r = c.post(f"/api/alerts/{i['hot']}/ack", json=WHO, headers=BEARER)
    assert r.status_code == 200, r.data
    assert r.json["alert"]["acknowledged_by"] == "maria"
    assert events(env, "event = 'ack'") == [(i["hot"], "ack", "maria", "on it, ticket OPS-12", None, "critical")]
    assert env.query("SELECT acknowledged_by, acknowledged_at IS NOT NULL FROM alerts WHERE id = %s", (i["hot"],)) == [("maria", True)]
    assert flow.silences.silenced(payload(i["hot"], "hall-1", "temperature", "threshold"), time.time()) == "acknowledged"
    assert flow.silences.silenced(payload(i["wet"], "hall-1", "humidity", "threshold"), time.time()) is None
    again = c.post(f"/api/alerts/{i['hot']}/ack", json=WHO, headers=BEARER)
    assert again.status_code == 409
    assert c.post(f"/api/alerts/{i['done']}/ack", json=WHO, headers=BEARER).status_code == 409
    assert c.post("/api/alerts/987654/ack", json=WHO, headers=BEARER).status_code == 404
    assert len(events(env, "event = 'ack'")) == 1
    # The list: acknowledged is no longer open; each alert says its state.
    assert state_ids(c, "acknowledged") == {i["hot"]}
    assert i["hot"] not in state_ids(c, "open") and i["wet"] in state_ids(c, "open")
    row = next(a for a in c.get("/api/alerts").json["alerts"] if a["id"] == i["hot"])
    assert row["acknowledged"] is True and row["acknowledged_by"] == "maria" and abs(row["acknowledged_at"] - time.time()) < 120


def test_snooze_alert_sensor_and_rule_then_unsnooze(flow, env):
    c, i = flow.client, flow.ids
    r = c.post(f"/api/alerts/{i['wet']}/snooze", json={**WHO, "duration_s": 3600}, headers=BEARER)
    assert r.status_code == 200, r.data
    alert_snooze = r.json["snooze"]
    assert alert_snooze["alert_id"] == i["wet"] and abs(alert_snooze["until"] - (time.time() + 3600)) < 120
    r = c.post("/api/snoozes", json={"sensor_id": "roof", "duration_s": 600, "who": "li", "note": "roof works"},
               headers=BEARER)
    assert r.status_code == 201, r.data
    sensor_snooze = r.json["snooze"]
    r = c.post("/api/snoozes", json={"rule": {"metric": "temperature", "type": "rate"}, "duration_s": 600, "who": "li"},
               headers=BEARER)
    assert r.status_code == 201, r.data
    rule_snooze = r.json["snooze"]
    assert c.post(f"/api/alerts/{i['done']}/snooze", json={**WHO, "duration_s": 60}, headers=BEARER).status_code == 409

    assert state_ids(c, "snoozed") == {i["wet"], i["roof"], i["flappy"], i["rate"]}
    assert state_ids(c, "open") == {i["hot"]}
    assert state_ids(c, "flapping") == {i["flappy"]}
    assert state_ids(c, "resolved") == {i["done"]}
    listed = {s["id"] for s in c.get("/api/snoozes").json["snoozes"]}
    assert listed == {alert_snooze["id"], sensor_snooze["id"], rule_snooze["id"]}
    assert events(env, "event = 'snooze'") == [
        (i["wet"], "snooze", "maria", "on it, ticket OPS-12", alert_snooze["id"], "warning"),
        (None, "snooze", "li", "roof works", sensor_snooze["id"], None),
        (None, "snooze", "li", "", rule_snooze["id"], None)]

    now = time.time()
    s = flow.silences
    assert s.silenced(payload(i["wet"], "hall-1", "humidity", "threshold"), now) == "snoozed"
    assert s.silenced(payload(None, "roof", "humidity", "threshold", OPENED), now) == "snoozed"  # a new alert of the sensor
    assert s.silenced(payload(None, "hall-9", "temperature", "rate", OPENED), now) == "snoozed"  # the rule, any sensor
    assert s.silenced(payload(None, "hall-9", "temperature", "threshold", OPENED), now) is None
    assert s.silenced(payload(i["wet"], "hall-1", "humidity", "threshold"), now + 3700) is None  # expired

    # The daemon's view after a restart: the same, from the database.
    fresh = Silences()
    load_silences(flow.store.pool, fresh)
    assert {x.id for x in fresh.snoozes(now)} == listed
    assert fresh.silenced(payload(None, "roof", None, "offline"), now) == "snoozed"

    r = c.delete(f"/api/snoozes/{sensor_snooze['id']}", json={"who": "li", "note": "done early"}, headers=BEARER)
    assert r.status_code == 200, r.data
    assert r.json["snooze"]["ended_by"] == "li"
    assert c.delete(f"/api/snoozes/{sensor_snooze['id']}", json={"who": "li"}, headers=BEARER).status_code == 409
    assert c.delete("/api/snoozes/987654", json={"who": "li"}, headers=BEARER).status_code == 404
    assert events(env, "event = 'unsnooze'") == [(None, "unsnooze", "li", "done early", sensor_snooze["id"], None)]
    assert s.silenced(payload(None, "roof", "humidity", "threshold", OPENED), time.time()) is None
    assert state_ids(c, "snoozed") == {i["wet"], i["rate"]}
    load_silences(flow.store.pool, fresh)
    assert {x.id for x in fresh.snoozes(time.time())} == {alert_snooze["id"], rule_snooze["id"]}


def test_an_acknowledged_warning_that_escalates_is_notified_told_or_loaded(flow, env):
    """The acknowledgement hides the warning it was given for, not the critical it becomes: in the process told by
    the API, and in a daemon that loads it from the database after the row's severity escalated."""
    c, i = flow.client, flow.ids
    assert c.post(f"/api/alerts/{i['wet']}/ack", json=WHO, headers=BEARER).status_code == 200
    with env.db() as conn:  # the alert store escalates the row in place
        conn.execute("UPDATE alerts SET severity = 'critical' WHERE id = %s", (i["wet"],))
    fresh = Silences()
    load_silences(flow.store.pool, fresh)
    now = time.time()
    for s in (flow.silences, fresh):
        warning = {**payload(i["wet"], "hall-1", "humidity", "threshold", FLAPPING), "severity": "warning"}
        assert s.silenced(warning, now) == "acknowledged"
        assert s.silenced(payload(i["wet"], "hall-1", "humidity", "threshold"), now) is None  # escalated: critical
        assert s.silenced(payload(i["wet"], "hall-1", "humidity", "threshold", "resolved"), now) is None


def test_store_flags_transitions_it_stores_while_silenced(flow, env):
    """What the alert store writes for a silenced transition: stored as usual, alert_events.silenced says why."""
    from pipeline.config import Secret
    from pipeline.operators.alerts.store import AlertStore

    c, i = flow.client, flow.ids
    assert c.post(f"/api/alerts/{i['hot']}/ack", json=WHO, headers=BEARER).status_code == 200
    cfg = flow.settings.config
    store = AlertStore(cfg.postgres, Secret(""), cfg.redis, Secret(""), env.metrics(), silences=flow.silences)
    store.start()
    try:
        hot = Alert("hall-1", "temperature", "threshold", "critical", NOW - 60, id=i["hot"])
        new = Alert("hall-2", "co2", "threshold", "warning", NOW)
        store.store([Transition(FLAPPING, hot, "critical", time.time(), message="flapping"),
                     Transition(OPENED, new, "warning", time.time(), message="co2 high")])
    finally:
        store.close()
    assert env.query("SELECT event, silenced FROM alert_events WHERE alert_id = %s AND event = 'flapping'", (i["hot"],)) == [
        ("flapping", "acknowledged")]
    assert env.query("SELECT event, silenced FROM alert_events WHERE alert_id = %s", (new.id,)) == [("opened", None)]


def test_the_daemon_loads_snoozes_and_acknowledgements_at_start_and_flags_maintenance(flow, env):
    """A restart: the runner's Silences holds what the API stored; a maintenance window by location (known from
    the sensors table) flags what the store writes, and a tick refreshes a snooze made elsewhere."""
    from pipeline.operators.alerts.runner import AlertRunner
    from pipeline.records import Reading
    from pipeline.runtime.batch import Batch

    c, i = flow.client, flow.ids
    assert c.post(f"/api/alerts/{i['hot']}/ack", json=WHO, headers=BEARER).status_code == 200
    assert c.post("/api/snoozes", json={"sensor_id": "hall-2", "duration_s": 600, "who": "li"}, headers=BEARER).status_code == 201
    settings = env.settings(alerts={"maintenance": [{"name": "roof-works", "location": "roof",
                                                     "start": "2020-01-01T00:00:00Z", "end": "2099-01-01T00:00:00Z"}]},
                            thresholds={"boiler_temp": {"warning": {"max": 40}, "critical": {"max": 60}}})
    cfg = settings.config
    sink = AlertRunner(alert_sections(cfg), settings.secrets.postgres_password, settings.secrets.redis_password, env.metrics())
    sink.start()
    try:
        now = time.time()
        s = sink.silences
        assert s.silenced(payload(i["hot"], "hall-1", "temperature", "threshold"), now) == "acknowledged"
        assert s.silenced(payload(None, "hall-2", "co2", "rate", OPENED), now) == "snoozed"
        assert s.silenced(payload(None, "roof", "co2", "rate", OPENED), now) == "maintenance"  # location from `sensors`
        assert s.silenced(payload(i["wet"], "hall-1", "humidity", "threshold"), now) is None
        # A reading of the roof opens an alert: stored as always, flagged as silenced by maintenance.
        transitions = list(sink.take(Batch([Reading("roof", "environment", None, "boiler_temp", 45, now, now)], [], {}, 1)))
        sink.write(transitions)
        opened = next(t.alert.id for t in transitions if t.event == OPENED)
        assert env.query("SELECT event, silenced FROM alert_events WHERE alert_id = %s", (opened,)) == [("opened", "maintenance")]
        # The roof's reading also ended its offline alert: resolved, and silenced the same way.
        assert env.query("SELECT event, silenced FROM alert_events WHERE alert_id = %s", (i["roof"],)) == [
            ("resolved", "maintenance")]
        row = next(a for a in c.get("/api/alerts").json["alerts"] if a["id"] == opened)
        assert row["maintenance"] is True
        # A snooze written by another instance's dashboard (only the database knows): the next tick learns it.
        with env.db() as conn:
            conn.execute("INSERT INTO alert_snoozes (type, until, created_by) VALUES "
                         "('stuck', now() AT TIME ZONE 'utc' + interval '1 hour', 'elsewhere')")
        assert s.silenced(payload(None, "x", "co2", "stuck", OPENED), time.time()) is None
        sink.tick()
        assert s.silenced(payload(None, "x", "co2", "stuck", OPENED), time.time()) == "snoozed"
    finally:
        sink.close()
