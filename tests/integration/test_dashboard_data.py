"""The dashboard's data endpoints against the real PostgreSQL and Redis: alerts (filters, order, resolve),
trends from aggregations or raw measurements, sensors with latest values, and 503 when PostgreSQL is away."""
from __future__ import annotations

import time
from types import SimpleNamespace

import msgspec
import pytest

from pipeline.config import DashboardConfig, Secret
from pipeline.dashboard import create_app
from pipeline.dashboard.store import Store
from pipeline.dashboard.view import PipelineView
from pipeline.observability.recent import RecentErrors
from pipeline.observability.status import LiveStatus
from pipeline.runtime.reload import ConfigHolder
from pipeline.runtime.supervisor import Supervisor

TOKEN = "data-test-token-0123"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
NOW = time.time()


def make_client(env, settings, **dashboard):
    cfg = settings.config
    store = Store(cfg.postgres, Secret(""), cfg.redis, Secret(""), DashboardConfig(**dashboard).raw_fallback_max_range_s)
    store.open()
    metrics = env.metrics()
    # A pipeline that started no thread and no component: the data endpoints need only the store.
    status = LiveStatus("test", NOW, Supervisor(), [], ConfigHolder(settings, metrics), cfg.mqtt.host, cfg.mqtt.port)
    view = PipelineView(status, metrics, cfg.kafka, store, DashboardConfig(**dashboard), RecentErrors())
    return create_app(view, DashboardConfig(**dashboard), Secret(TOKEN)).test_client(), store, metrics


@pytest.fixture
def data(env):
    settings = env.migrate()
    with env.db() as conn:
        for sid in ("hall-1", "hall-2", "<script>x</script>"):
            conn.execute("INSERT INTO sensors (sensor_id, type, location) VALUES (%s, 'environment', 'hall')", (sid,))

        def alert(sid, severity, age_s, resolved=False, kind="threshold", message="too hot"):
            return conn.execute(
                "INSERT INTO alerts (sensor_id, type, message, severity, timestamp, resolved, resolved_at) VALUES "
                "(%s, %s, %s, %s, to_timestamp(%s) AT TIME ZONE 'utc', %s, "
                " CASE WHEN %s THEN now() AT TIME ZONE 'utc' END) RETURNING id",
                (sid, kind, message, severity, NOW - age_s, resolved, resolved)).fetchone()[0]

        ids = {"warning_new": alert("hall-1", "warning", 10), "critical_old": alert("hall-2", "critical", 600),
               "info": alert("hall-1", "info", 5, kind="stuck"), "critical_new": alert("hall-1", "critical", 60, kind="rate"),
               "resolved": alert("hall-2", "warning", 900, resolved=True),
               "xss": alert("<script>x</script>", "warning", 1000, message="<img src=x onerror=alert(1)>")}
    client, store, metrics = make_client(env, settings)
    yield SimpleNamespace(settings=settings, client=client, store=store, metrics=metrics, ids=ids)
    store.close()


def ids_of(response) -> list[int]:
    assert response.status_code == 200, response.data
    return [a["id"] for a in response.json["alerts"]]


def test_open_alerts_most_severe_then_newest_first_and_filters(data):
    i, c = data.ids, data.client
    assert ids_of(c.get("/api/alerts")) == [i["critical_new"], i["critical_old"], i["warning_new"], i["xss"], i["info"]]
    assert ids_of(c.get("/api/alerts?status=resolved")) == [i["resolved"]]
    assert set(ids_of(c.get("/api/alerts?status=all"))) == set(i.values())
    assert ids_of(c.get("/api/alerts?status=all"))[-1] == i["resolved"]  # open ones first
    assert ids_of(c.get("/api/alerts?severity=critical")) == [i["critical_new"], i["critical_old"]]
    assert ids_of(c.get("/api/alerts?sensor_id=hall-1&severity=critical")) == [i["critical_new"]]
    assert ids_of(c.get("/api/alerts?limit=2")) == [i["critical_new"], i["critical_old"]]
    first = c.get("/api/alerts?limit=1").json["alerts"][0]
    assert first["metric"] is None and abs(first["timestamp"] - (NOW - 60)) < 1 and first["resolved"] is False


def test_parameters_are_data_never_sql(data, env):
    assert ids_of(data.client.get("/api/alerts?sensor_id=' OR '1'='1")) == []
    assert ids_of(data.client.get("/api/alerts?sensor_id=hall-1'; DROP TABLE alerts; --")) == []
    assert data.client.get("/api/sensors/x'%20OR%201=1--").status_code == 404
    assert env.query("SELECT count(*) FROM alerts")[0][0] == len(data.ids)


def test_resolve_by_hand(data, env):
    c, ident = data.client, data.ids["critical_old"]
    assert c.post(f"/api/alerts/{ident}/resolve").status_code == 401
    r = c.post(f"/api/alerts/{ident}/resolve", headers=BEARER)
    assert r.status_code == 200 and r.json["alert"]["resolved"] is True
    resolved, resolved_at = env.query("SELECT resolved, resolved_at FROM alerts WHERE id = %s", (ident,))[0]
    assert resolved is True and abs(resolved_at.timestamp() - time.time()) < 120  # stored as naive UTC
    assert ident not in ids_of(c.get("/api/alerts")) and ident in ids_of(c.get("/api/alerts?status=resolved"))
    # its history says so, as for an automatic resolution: one `resolved` event at the resolve time
    assert env.query("SELECT event, severity, message, timestamp FROM alert_events WHERE alert_id = %s", (ident,)) == \
        [("resolved", "critical", "resolved by hand", resolved_at)]
    again = c.post(f"/api/alerts/{ident}/resolve", headers=BEARER)
    assert again.status_code == 409 and again.json["alert"]["id"] == ident
    assert c.post("/api/alerts/987654/resolve", headers=BEARER).status_code == 404
    assert env.query("SELECT count(*) FROM alert_events WHERE alert_id = %s", (ident,)) == [(1,)]  # not again on a 409
    get = data.metrics.registry.get_sample_value
    assert get("pipeline_alert_transitions_total", {"type": "threshold", "event": "resolved", "severity": "critical"}) == 1
    assert get("pipeline_alerts_open_in_database", {"severity": "critical"}) == 1


def test_alerts_carry_their_metric(data, env):
    with env.db() as conn:
        conn.execute("UPDATE alerts SET metric = 'temperature' WHERE id = %s", (data.ids["info"],))
    client, store, _ = make_client(env, data.settings)  # a new process checks the schema again
    try:
        by_id = {a["id"]: a for a in client.get("/api/alerts").json["alerts"]}
        assert by_id[data.ids["info"]]["metric"] == "temperature" and by_id[data.ids["critical_new"]]["metric"] is None
    finally:
        store.close()


def test_alerts_page_escapes_database_text(data):
    html = data.client.get("/alerts").get_data(as_text=True)
    assert "<script>x</script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def _insert(env, sql: str, rows: list[tuple]) -> None:
    with env.db() as conn, conn.cursor() as cur:
        cur.executemany(sql, rows)


def test_trend_from_aggregations_with_min_max(data, env):
    base = (int(NOW) // 3600) * 3600 - 7200
    _insert(env, "INSERT INTO aggregations (sensor_id, metric, avg_value, min_value, max_value, count, period, timestamp) "
                 "VALUES ('hall-1', 'temperature', %s, %s, %s, %s, %s, to_timestamp(%s) AT TIME ZONE 'utc')",
            [(20 + k, 19 + k, 22 + k, 60, "1m", base + 60 * k) for k in range(10)]
            + [(30.0, 29.0, 31.0, 300, "5m", base)])
    r = data.client.get(f"/api/sensors/hall-1/trend?metric=temperature&period=1m&from={base + 120}&to={base + 420}")
    t = r.json
    assert r.status_code == 200 and t["source"] == "aggregations"
    assert t["t"] == [base + 60 * k for k in range(2, 7)]
    assert t["avg"] == [22, 23, 24, 25, 26] and t["min"] == [21, 22, 23, 24, 25] and t["max"] == [24, 25, 26, 27, 28]
    five = data.client.get(f"/api/sensors/hall-1/trend?metric=temperature&period=5m&from={base}&to={base + 3600}").json
    assert five["t"] == [base] and five["avg"] == [30.0]


def test_trend_falls_back_to_raw_measurements_over_short_ranges(data, env):
    start = (int(NOW) // 60) * 60 - 600
    rows = [("hall-2", "humidity", v, start + s) for s, v in ((0, 40.0), (20, 44.0), (59, 42.0), (60, 50.0), (130, 30.0))]
    _insert(env, "INSERT INTO measurements (sensor_id, metric, value, timestamp) VALUES "
                 "(%s, %s, %s, to_timestamp(%s) AT TIME ZONE 'utc')", rows)
    t = data.client.get(f"/api/sensors/hall-2/trend?metric=humidity&period=1m&from={start}&to={start + 600}").json
    assert t["source"] == "measurements"
    assert t["t"] == [start, start + 60, start + 120]
    assert t["avg"] == [42.0, 50.0, 30.0] and t["min"] == [40.0, 50.0, 30.0] and t["max"] == [44.0, 50.0, 30.0]
    assert t["count"] == [3, 1, 1]
    # Longer than dashboard.raw_fallback_max_range_s: no scan of raw readings.
    client, store, _ = make_client(env, data.settings, raw_fallback_max_range_s=300)
    try:
        far = client.get(f"/api/sensors/hall-2/trend?metric=humidity&period=1m&from={start}&to={start + 600}").json
        assert far["source"] == "none" and far["t"] == []
    finally:
        store.close()


def test_sensors_with_latest_values_from_redis(data, env):
    prefix = f"t{env.run_id}:"
    env.redis.hset(f"{prefix}latest:hall-1", mapping={"type": "environment", "location": "north hall",
                                                      "temperature": "21.5", "temperature:ts": repr(NOW - 5)})
    env.redis.hset(f"{prefix}latest:cold-room", mapping={"type": "freezer", "location": "",
                                                        "temperature": "-18.0", "temperature:ts": repr(NOW - 2)})
    # The sensor index as the Redis sink writes it: a sorted set by last write (sinks/redis_stream.py).
    env.redis.zadd(f"{prefix}sensors", {"hall-1": int(NOW), "cold-room": int(NOW) - 60})
    _insert(env, "INSERT INTO measurements (sensor_id, metric, value, timestamp) VALUES "
                 "('hall-1', 'temperature', %s, to_timestamp(%s) AT TIME ZONE 'utc')",
            [(20.0 + k, NOW - 600 + 60 * k) for k in range(5)])
    listing = data.client.get("/api/sensors?spark=30").json
    assert listing["total"] == 2 and [s["sensor_id"] for s in listing["sensors"]] == ["cold-room", "hall-1"]
    hall = listing["sensors"][1]
    assert hall["metrics"] == {"temperature": {"value": 21.5, "ts": pytest.approx(NOW - 5)}}
    assert hall["location"] == "north hall"
    times, values = listing["sparklines"]["hall-1"]["temperature"]
    assert values == [20.0, 21.0, 22.0, 23.0, 24.0] and times == sorted(times)
    assert [s["sensor_id"] for s in data.client.get("/api/sensors?q=FREEZER").json["sensors"]] == ["cold-room"]
    assert data.client.get("/api/sensors?limit=1&offset=1").json["sensors"][0]["sensor_id"] == "hall-1"
    # A plain set left by an older version (until the daemon converts it at start) is still listed.
    env.redis.delete(f"{prefix}sensors")
    env.redis.sadd(f"{prefix}sensors", "hall-1", "cold-room")
    assert data.client.get("/api/sensors").json["total"] == 2

    one = data.client.get("/api/sensors/hall-1").json
    assert one["type"] == "environment" and one["registered_at"] is not None
    assert [a["severity"] for a in one["open_alerts"]] == ["critical", "warning", "info"]
    registered_only = data.client.get("/api/sensors/hall-2").json  # in PostgreSQL, no reading in Redis yet
    assert registered_only["metrics"] == {} and registered_only["location"] == "hall"
    assert data.client.get("/api/sensors/nobody").status_code == 404


def test_postgres_away_is_503_naming_it(env, data):
    away = msgspec.structs.replace(data.settings.config.postgres, port=1, connect_timeout_s=1)
    settings = msgspec.structs.replace(data.settings, config=msgspec.structs.replace(data.settings.config, postgres=away))
    client, store, _ = make_client(env, settings, probe_cache_s=0.1)
    try:
        r = client.get("/api/alerts")
        assert r.status_code == 503 and r.json["dependency"] == "postgres"
        ready = client.get("/ready")
        assert ready.status_code == 503 and "postgres" in ready.json["failing"] and "redis" not in ready.json["failing"]
    finally:
        store.close()
