"""GET /api/series against a real database filled by the history import (raw readings and the aggregates it
rebuilds): the resolution chosen for an hour, a week and a year, the figures equal to the stored rows, CSV that
parses back to the JSON figures, 400s naming the parameter; and the OpenAPI description served by the daemon,
valid, covering every /api route, and matching real answers."""
from __future__ import annotations

import csv
import importlib
import io
import time

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi

from pipeline.config import DashboardConfig, Secret
from pipeline.dashboard import create_app
from pipeline.dashboard.store import Store
from pipeline.dashboard.view import PipelineView
from pipeline.observability.recent import RecentErrors
from pipeline.observability.status import LiveStatus
from pipeline.runtime.reload import ConfigHolder
from pipeline.runtime.supervisor import Supervisor
from pipeline.stages.mapping_stats import MappingStats
from tests.integration.test_dashboard_data import BEARER, TOKEN

# One import of a year serves every test of the module: on one worker (xdist_group), not once on each.
pytestmark = pytest.mark.xdist_group("series-api")
importer = importlib.import_module("pipeline.tools.import")
NOW = float(int(time.time()) // 60 * 60)  # on a minute: the last hour's windows are whole
HOUR, DAY = 3600, 86400
SENSOR, METRIC = "hist-1", "temperature"
STEP = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}


def value_at(ts: float) -> float:
    return round(20 + (ts % 7919) / 1000, 3)


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A year of readings every 30 minutes and the last hour every 10 s, imported; a client over the real store."""
    from tests.integration.conftest import Env

    env = Env()
    settings = env.migrate()
    path = tmp_path_factory.mktemp("series") / "history.csv"
    stamps = sorted({NOW - k * 1800 for k in range(1, 366 * 48)} | {NOW - k * 10 for k in range(1, 361)})
    with open(path, "w") as f:
        f.write("sensor_id,metric,value,timestamp\n")
        f.writelines(f"{SENSOR},{METRIC},{value_at(t)},{t}\n" for t in stamps)
    assert importer.main([str(path), "--allow-old"], settings=settings, out=io.StringIO(), err=io.StringIO()) == 0
    cfg = settings.config
    store = Store(cfg.postgres, Secret(""), cfg.redis, Secret(""), periods=cfg.aggregation.periods,
                  retention=cfg.retention)
    store.open()
    metrics = env.metrics()
    status = LiveStatus("test", NOW, Supervisor(), [], ConfigHolder(settings, metrics), cfg.mqtt.host, cfg.mqtt.port)
    view = PipelineView(status, metrics, cfg.kafka, store, DashboardConfig(), RecentErrors())
    app = create_app(view, DashboardConfig(), Secret(TOKEN))
    yield env, app, app.test_client(), stamps
    store.close()
    env.cleanup()


def series(client, start: float, end: float, points: int, **extra):
    r = client.get("/api/series", query_string={"sensor": SENSOR, "metric": METRIC, "from": start, "to": end,
                                                "points": points, **extra})
    assert r.status_code == 200, r.data
    return r


def stored(env, period: str, start: float, end: float) -> list[dict]:
    rows = env.query("SELECT extract(epoch FROM timestamp)::float8, avg_value, min_value, max_value, count FROM "
                     "aggregations WHERE sensor_id = %s AND metric = %s AND period = %s AND timestamp >= "
                     "to_timestamp(%s) AT TIME ZONE 'utc' AND timestamp < to_timestamp(%s) AT TIME ZONE 'utc' "
                     "ORDER BY 1", (SENSOR, METRIC, period, start, end))
    return [dict(zip(("t", "avg", "min", "max", "count"), r)) for r in rows]


@pytest.mark.parametrize("span, points, expected", [
    (HOUR, 50, "1m"),  # 60 one-minute windows >= 50; 12 five-minute ones are too few
    (HOUR, 200, "raw"),  # no period gives 200 points in an hour: the readings themselves
    (7 * DAY, 500, "5m"),  # 2016 five-minute windows; 168 hours are too few
    (365 * DAY, 300, "1d"),  # 365 days
    (365 * DAY, 1000, "1h"),  # 8760 hours; 365 days are too few
])
def test_the_coarsest_stored_resolution_giving_the_points_asked(filled, span, points, expected):
    env, _, client, stamps = filled
    answer = series(client, NOW - span, NOW, points).json
    assert answer["resolution"] == expected and answer["truncated"] is False
    if expected == "raw":
        assert answer["points"] == [{"t": t, "value": value_at(t)} for t in stamps if t >= NOW - span]
        assert answer["count"] == 360 >= points
    else:
        rows = stored(env, expected, NOW - span, NOW)
        assert answer["points"] == rows and answer["count"] == len(rows) > 0
        first_window = -(-(NOW - span) // STEP[expected]) * STEP[expected]  # windows starting in the range
        assert sum(p["count"] for p in answer["points"]) == sum(1 for t in stamps if t >= first_window)


def test_iso_times_and_a_range_older_than_a_period_keeps_pick_one_still_kept(filled):
    _, _, client, _ = filled
    # Two weeks, 200 days ago: 1m and 5m rows of that time are gone by retention (7 and 90 days): 1h is the answer
    # although 5m would give the points.
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 200 * DAY))
    answer = series(client, start, NOW - 186 * DAY, 3000).json
    assert answer["resolution"] == "1h" and answer["from"] == NOW - 200 * DAY and answer["count"] == 14 * 24


def test_csv_parses_back_to_the_json_figures(filled):
    _, _, client, _ = filled
    for span, points in ((HOUR, 200), (7 * DAY, 500)):
        as_json = series(client, NOW - span, NOW, points).json
        r = series(client, NOW - span, NOW, points, format="csv")
        assert r.mimetype == "text/csv" and r.headers["X-Resolution"] == as_json["resolution"]
        rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
        parsed = [{k: (int(v) if k == "count" else float(v)) for k, v in row.items()} for row in rows]
        assert parsed == as_json["points"] and len(parsed) > 100


def test_a_cap_bounds_the_work_and_the_answer_says_so(filled, monkeypatch):
    _, _, client, _ = filled
    from pipeline.dashboard import series as series_module

    monkeypatch.setattr(series_module, "MAX_POINTS", 20)
    answer = series(client, NOW - HOUR, NOW, 20).json  # 60 one-minute rows there
    assert answer["resolution"] == "1m" and answer["count"] == 20 and answer["truncated"] is True
    assert answer["limit"] == 20 and len(answer["points"]) == 20


@pytest.mark.parametrize("query, parameter", [
    ({"metric": METRIC}, "sensor"),
    ({"sensor": SENSOR}, "metric"),
    ({"sensor": SENSOR, "metric": "9lives"}, "metric"),
    ({"sensor": SENSOR, "metric": METRIC, "points": "0"}, "points"),
    ({"sensor": SENSOR, "metric": METRIC, "points": "10001"}, "points"),
    ({"sensor": SENSOR, "metric": METRIC, "points": "many"}, "points"),
    ({"sensor": SENSOR, "metric": METRIC, "from": "yesterday"}, "from"),
    ({"sensor": SENSOR, "metric": METRIC, "from": "2000", "to": "1000"}, "from"),
    ({"sensor": SENSOR, "metric": METRIC, "to": "1e40"}, "to"),
    ({"sensor": SENSOR, "metric": METRIC, "format": "xml"}, "format"),
    ({"sensor": "x" * 51, "metric": METRIC}, "sensor"),
])
def test_bad_parameters_are_400_naming_the_parameter(filled, query, parameter):
    _, _, client, _ = filled
    r = client.get("/api/series", query_string=query)
    assert r.status_code == 400 and r.json["parameter"] == parameter, r.json


# -- the OpenAPI description ------------------------------------------------------------------------------------
def check(doc: dict, path: str, method: str, r) -> None:
    """The answer `r` is valid against the document's schema for that route, method and status code."""
    response = doc["paths"][path][method]["responses"][str(r.status_code)]
    schema = response["content"]["application/json"]["schema"]
    errors = list(Draft202012Validator({"components": doc["components"], **schema}).iter_errors(r.json))
    assert not errors, f"{method.upper()} {path} {r.status_code}: {[e.message for e in errors][:3]}"


def test_the_openapi_description_is_valid_and_covers_every_api_route(filled):
    _, app, client, _ = filled
    doc = client.get("/api/openapi.json").json
    validate_openapi(doc)
    routes = {(rule.rule.replace("<", "{").replace(">", "}"), m.lower()) for rule in app.url_map.iter_rules()
              for m in rule.methods - {"HEAD", "OPTIONS"} if rule.rule.startswith("/api/")}
    described = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert routes <= described and {p for p, _ in described if p.startswith("/api/")} == {p for p, _ in routes}


def test_real_answers_match_the_openapi_description(filled):
    env, app, client, _ = filled
    doc = client.get("/api/openapi.json").json
    stats = MappingStats()  # a mapping that took a message and refused one
    counts = stats.counts("zigbee", "zigbee2mqtt/#", "json")
    counts.decoded(3, 1)
    counts.refused_message("mapping_no_value", "no field holds a number", "zigbee2mqtt/plug", b'{"state": "ON"}')
    app.extensions["dashboard"].view.status.attach_mappings(stats)
    with env.db() as conn:
        conn.execute("INSERT INTO sensors (sensor_id, type) VALUES ('api-2', 'sensor') ON CONFLICT DO NOTHING")
        ids = [conn.execute("INSERT INTO alerts (sensor_id, type, message, severity, timestamp, metric) VALUES "
                            "(%s, %s, 'too hot', 'warning', now() AT TIME ZONE 'utc', %s) RETURNING id",
                            (SENSOR, kind, METRIC)).fetchone()[0] for kind in ("threshold", "rate", "stuck")]
    gets = {"/api/series": f"/api/series?sensor={SENSOR}&metric={METRIC}&from={NOW - 7 * DAY}&to={NOW}&points=500",
            "/api/sensors": "/api/sensors?spark=30", "/api/sensors/{sensor_id}": f"/api/sensors/{SENSOR}",
            "/api/sensors/{sensor_id}/trend": f"/api/sensors/{SENSOR}/trend?metric={METRIC}&period=1h",
            "/api/alerts": "/api/alerts?status=all", "/api/pipeline": "/api/pipeline?history=60",
            "/api/snoozes": "/api/snoozes", "/api/mappings": "/api/mappings"}
    raw = client.get(f"/api/series?sensor={SENSOR}&metric={METRIC}&from={NOW - HOUR}&to={NOW}&points=200")
    check(doc, "/api/series", "get", raw)
    for path, url in gets.items():
        r = client.get(url)
        assert r.status_code == 200, (url, r.data)
        check(doc, path, "get", r)
    assert client.get("/api/mappings").json["mappings"][0]["last_refused"]["reason"] == "mapping_no_value"
    check(doc, "/api/series", "get", client.get("/api/series?sensor=x"))  # a 400 naming `metric`
    check(doc, "/api/sensors/{sensor_id}", "get", client.get("/api/sensors/nobody"))  # 404
    who = {"who": "ops", "note": "looking"}
    check(doc, "/api/alerts/{alert_id}/ack", "post", client.post(f"/api/alerts/{ids[0]}/ack", json=who, headers=BEARER))
    check(doc, "/api/alerts/{alert_id}/ack", "post", client.post(f"/api/alerts/{ids[0]}/ack", json=who, headers=BEARER))
    check(doc, "/api/alerts/{alert_id}/ack", "post", client.post(f"/api/alerts/{ids[0]}/ack", json=who))  # 401
    check(doc, "/api/alerts/{alert_id}/snooze", "post",
          client.post(f"/api/alerts/{ids[1]}/snooze", json={"duration_s": 600, **who}, headers=BEARER))
    made = client.post("/api/snoozes", json={"sensor_id": "api-2", "duration_s": 600, **who}, headers=BEARER)
    check(doc, "/api/snoozes", "post", made)
    check(doc, "/api/snoozes", "get", client.get("/api/snoozes"))
    check(doc, "/api/snoozes/{snooze_id}", "delete",
          client.delete(f"/api/snoozes/{made.json['snooze']['id']}", json=who, headers=BEARER))
    check(doc, "/api/alerts/{alert_id}/resolve", "post", client.post(f"/api/alerts/{ids[2]}/resolve", headers=BEARER))
    check(doc, "/api/alerts/{alert_id}/resolve", "post", client.post(f"/api/alerts/{ids[2]}/resolve", headers=BEARER))
    check(doc, "/health", "get", client.get("/health"))
