"""The shipped Grafana dashboards and Prometheus rules against a running pipeline: every SQL query of every
dashboard (panels, annotations, variables), with Grafana's macros and variables expanded, runs against a database
the daemon filled and returns rows; every PromQL expression of the dashboards and of deploy/prometheus/alerts.yml
(without its threshold) returns series from a real Prometheus (the Debian package, on its own port and data
directory) scraping the daemon. One daemon serves both tests (xdist_group: the same worker, one after the other)."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
import yaml

from tests import grafana_dashboards as gf
from tests.integration.clients import DaemonProcess, Publisher, wait_for
from tests.integration.conftest import ROOT, Env
from pipeline.tools.bench.procs import free_port

# Tens of seconds (a daemon filling two hours of windows, a real Prometheus): in the faults tier, out of make test-fast.
pytestmark = [pytest.mark.xdist_group("grafana-prometheus"), pytest.mark.timeout(240), pytest.mark.faults]
TOKEN = "grafana-test-token-0123"
SENSORS = ("s0", "s1", "s2", "s3")
STEP_S = 30  # one reading per sensor and metric every 30 s of event time
HISTORY_S = 2 * 3600
SCRAPE_S = 1.0


def http(url: str, body: dict | None = None, token: str | None = None, timeout: float = 10) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A daemon that stored two hours of readings of four sensors, closed windows of every period, opened alerts
    (one acknowledged, one snoozed through the dashboard's API) and dead-lettered a broken message."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DASHBOARD_TOKEN", TOKEN)
    tmp = tmp_path_factory.mktemp("grafana")
    # Module-scoped, so set up before tests/conftest.py's per-test state directory: the daemon's spools go here.
    mp.delenv("STATE_DIRECTORY", raising=False)
    mp.setenv("XDG_STATE_HOME", str(tmp / "state"))
    env = Env()
    port = free_port()
    extra = {"dashboard": {"enabled": True, "port": port, "probe_cache_s": 0.5},
             "mqtt": {"broker_stats": {"enabled": True}}}
    env.migrate(env.settings(**extra))
    daemon = DaemonProcess(env.write_config(tmp / "config.yaml", **extra), tmp / "daemon.log")
    try:
        daemon.start()
        now = time.time()
        t0 = now - HISTORY_S
        messages = []
        steps = HISTORY_S // STEP_S
        for k in range(steps + 1):
            t = t0 + k * STEP_S
            hot = k >= steps - 3  # the last readings: s0 critical, s1 warning
            for i, sensor in enumerate(SENSORS):
                temp = {"s0": 70.0, "s1": 45.0}.get(sensor) if hot else None
                readings = {"temperature": temp if temp is not None else 20 + (k + i) % 5,
                            "humidity": 50 + (k * 3 + i) % 9}
                messages.append((f"{env.root}/{sensor}", json.dumps({"timestamp": round(t, 3), "readings": readings})))
        messages.append((f"{env.root}/s2", "{broken"))
        pub = Publisher()
        pub.publish_all(messages)
        pub.close()
        readings = (steps + 1) * len(SENSORS) * 2
        wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] == readings, 60,
                 what=f"{readings} readings stored")
        # The periods the resolution test reads (a longer one, 1d say, closes no window within two hours).
        wait_for(lambda: {r[0] for r in env.query("SELECT DISTINCT period FROM aggregations")} >= {"1m", "5m", "1h"},
                 60, what="closed windows of 1m, 5m and 1h")
        wait_for(lambda: env.query("SELECT count(*) FROM alerts WHERE NOT resolved")[0][0] >= 2, 30, what="open alerts")
        alerts = dict(env.query("SELECT sensor_id, id FROM alerts WHERE NOT resolved AND type = 'threshold'"))
        url = f"http://127.0.0.1:{port}"
        who = {"who": "ops@example", "note": "looking"}
        assert http(f"{url}/api/alerts/{alerts['s1']}/ack", who, TOKEN)[0] == 200
        assert http(f"{url}/api/alerts/{alerts['s0']}/snooze", dict(who, duration_s=3600), TOKEN)[0] == 200
        yield {"env": env, "daemon": daemon, "url": url, "port": port, "now": now}
    finally:
        daemon.stop()
        env.cleanup()
        mp.undo()


# -- SQL ------------------------------------------------------------------------------------------------------
def run_sql(conn, sql: str) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


# What a user picks: the sensor with the alerts (the reserved broker:<host> sensor of the drop counters may sort
# first) and its hot metric.
PICKED = {"sensor": "s0", "metric": "temperature"}


def sql_variables(conn, board: dict, start, end) -> dict[str, str]:
    """Each PostgreSQL query variable as Grafana sets it: its query run (with the variables before it), the
    value a user picks among those it offers."""
    values: dict[str, str] = {}
    for v in gf.variables(board):
        if gf._uid(v.get("datasource")) != gf.POSTGRES_UID:
            continue
        query = v["query"] if isinstance(v["query"], str) else v["query"].get("rawSql")
        offered = [str(r[0]) for r in run_sql(conn, gf.expand_sql(query, start, end, values))]
        assert PICKED[v["name"]] in offered, f"{board['title']}: variable ${v['name']} offers {offered}"
        values[v["name"]] = gf.sql_value(PICKED[v["name"]])
    return values


def test_every_sql_query_of_every_dashboard_returns_rows(pipeline):
    env = pipeline["env"]
    end = datetime.fromtimestamp(pipeline["now"] + 60, timezone.utc)
    start = end - timedelta(hours=3)
    checked = []
    with env.db() as conn:
        for name, board in gf.dashboards().items():
            values = sql_variables(conn, board, start, end)
            for where, target in gf.queries(board, gf.POSTGRES_UID):
                sql = gf.expand_sql(target["rawSql"], start, end, values, target.get("maxDataPoints"),
                                    gf.min_interval_ms(gf.POSTGRES_UID))
                try:
                    rows = run_sql(conn, sql)
                except psycopg.Error as err:
                    pytest.fail(f"{where}: {err}\n{sql}")
                assert rows, f"{where}: no rows\n{sql}"
                assert any(v is not None for row in rows for v in row), f"{where}: only NULLs\n{sql}"
                checked.append(where)
    # Every dashboard but the Prometheus one reads PostgreSQL; each of their panels was run.
    assert sum(1 for w in checked if w.startswith("Fleet overview")) >= 8
    assert sum(1 for w in checked if w.startswith("Sensor history")) >= 5
    assert sum(1 for w in checked if w.startswith("Alerts")) >= 6


def _panel_sql(board: dict, title: str) -> dict:
    return next(t for p in gf.panels(board) if p["title"] == title for t in p.get("targets", []))


def test_the_sensor_history_reads_raw_readings_for_an_hour_and_coarser_periods_for_longer_ranges(pipeline):
    """The period follows the panel's interval: an hour reads raw readings, a day 1 m windows, a week 5 m
    windows, a year 1 h windows; a year returns no more rows than the hour's raw readings (the windows of two
    hours here: a year of them would be 8,760)."""
    env = pipeline["env"]
    board = gf.dashboards()["sensor-history.json"]
    resolution, chart = _panel_sql(board, "Resolution"), _panel_sql(board, "$metric of $sensor")
    end = datetime.fromtimestamp(pipeline["now"] + 60, timezone.utc)
    picked, rows = {}, {}
    with env.db() as conn:
        values = sql_variables(conn, board, end - timedelta(hours=1), end)
        for label, span in (("hour", timedelta(hours=1)), ("day", timedelta(days=1)), ("week", timedelta(days=7)),
                            ("year", timedelta(days=365))):
            start = end - span
            picked[label] = run_sql(conn, gf.expand_sql(resolution["rawSql"], start, end, values))[0][0]
            started = time.perf_counter()
            rows[label] = len(run_sql(conn, gf.expand_sql(chart["rawSql"], start, end, values, 1000)))
            rows[label + "_ms"] = round((time.perf_counter() - started) * 1000, 1)
            if label == "hour":
                raw = env.query("SELECT count(*) FROM measurements WHERE sensor_id = %s AND metric = %s "
                                "AND timestamp BETWEEN %s AND %s", (values["sensor"], values["metric"],
                                                                   start.replace(tzinfo=None), end.replace(tzinfo=None)))
    print("resolutions", picked, "rows and ms", rows)
    assert picked == {"hour": "raw", "day": "1m", "week": "5m", "year": "1h"}
    assert rows["hour"] == raw[0][0] >= 3600 // STEP_S - 2  # the raw readings of one metric
    assert 1 <= rows["year"] <= 3 and rows["week"] <= HISTORY_S // 300 + 1


# -- PromQL ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prometheus(pipeline, tmp_path_factory):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed: run scripts/ensure-test-tools.sh (Debian package prometheus)")
    tmp = tmp_path_factory.mktemp("prometheus")
    conf = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    conf["global"].update(scrape_interval=f"{SCRAPE_S:g}s", evaluation_interval=f"{SCRAPE_S:g}s")
    conf["rule_files"] = [str(ROOT / "deploy" / "prometheus" / "alerts.yml")]
    conf["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{pipeline['port']}"]}]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(conf))
    port = free_port()
    log = open(tmp / "prometheus.log", "ab")
    proc = subprocess.Popen([binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def scraped():
            if proc.poll() is not None:
                raise AssertionError((tmp / "prometheus.log").read_text()[-3000:])
            try:
                return http(f"{base}/api/v1/query?query=" + urllib.parse.quote('up{job="realtime-pipeline"} == 1'))[1]["data"]["result"]
            except (OSError, KeyError):
                return None
        wait_for(scraped, 30, 0.5, what="Prometheus scraping the daemon")
        time.sleep(8 * SCRAPE_S)  # enough samples for rate() over $__rate_interval and deriv() over 10m
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def promql(base: str, expr: str) -> list[dict]:
    status, body = http(f"{base}/api/v1/query?query=" + urllib.parse.quote(expr))
    assert status == 200 and body.get("status") == "success", f"{expr}: {body}"
    return body["data"]["result"]


def test_every_promql_expression_of_the_dashboards_and_rules_returns_series(pipeline, prometheus):
    checked = []
    for name, board in gf.dashboards().items():
        values = {}
        for v in gf.variables(board):
            if gf._uid(v.get("datasource")) != gf.PROMETHEUS_UID:
                continue
            query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            metric, label = query.removeprefix("label_values(").removesuffix(")").split(", ")
            status, body = http(f"{prometheus}/api/v1/label/{label}/values?" + urllib.parse.urlencode({"match[]": metric}))
            v = dict(v, _values=body["data"])
            assert status == 200 and v["_values"], f"{name}: variable ${v['name']} has no values"
            values[v["name"]] = gf.prom_value(v, None if v.get("includeAll") else v["_values"][:1])
        for where, target in gf.queries(board, gf.PROMETHEUS_UID):
            # The test's Prometheus scrapes every second: the data source's timeInterval would say so.
            iv = gf.interval_ms(datetime.now(timezone.utc) - timedelta(minutes=5), datetime.now(timezone.utc),
                                target.get("maxDataPoints"), int(SCRAPE_S * 1000))
            expr = gf.expand_promql(target["expr"], values, iv, SCRAPE_S, 300)
            assert promql(prometheus, expr), f"{where}: no series for {expr}"
            checked.append(where)
    assert len(checked) >= 15

    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"]
    for rule in (r for g in rules for r in g["rules"]):
        for expr in gf.rule_measures(rule["expr"]):
            assert promql(prometheus, expr), f"rule {rule['alert']}: no series for {expr}"
            checked.append(rule["alert"])
    # Prometheus loaded the shipped rules and evaluates them without errors; none fires on a healthy pipeline
    # but the scrape: the test's two hot sensors are the fleet's alerts, not the pipeline's.
    status, body = http(f"{prometheus}/api/v1/rules")
    loaded = [r for g in body["data"]["groups"] for r in g["rules"]]
    assert status == 200 and len(loaded) == len({r["alert"] for g in rules for r in g["rules"]})
    assert all(r["health"] == "ok" for r in loaded), [(r["name"], r.get("lastError")) for r in loaded]
    assert promql(prometheus, "pipeline_ready")[0]["value"][1] == "1"
