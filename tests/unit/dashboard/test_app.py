"""The dashboard's Flask app through the test client, over a fake view: every endpoint, its 400s, 401s,
403s, 404s, 409s and 503s, the security headers and the escaping of data in server-rendered pages."""
from __future__ import annotations

import base64
from datetime import datetime, timezone

import pytest
from prometheus_client import CollectorRegistry

from pipeline.config import ConfigError, DashboardConfig, Secret
from pipeline.dashboard import create_app
from pipeline.dashboard.store import Unavailable
from pipeline.observability.metrics import Metrics

TOKEN = "s3cret-token-0123"
XSS_ID = "<script>alert(1)</script>"
XSS_MESSAGE = '<img src=x onerror="alert(2)"> too hot'


def alert(ident: int, severity: str = "critical", resolved: bool = False, sensor_id: str = "hall-1",
          message: str = "temperature 65 above 60") -> dict:
    return {"id": ident, "sensor_id": sensor_id, "type": "threshold", "message": message, "severity": severity,
            "timestamp": 1_760_000_000.0, "resolved": resolved, "resolved_at": 1_760_000_100.0 if resolved else None,
            "metric": "temperature"}


class FakeView:
    """Records calls and answers with canned data; flags switch it to failing."""

    def __init__(self):
        self.metrics = Metrics(CollectorRegistry())
        self.calls: list[tuple] = []
        self.live, self.is_ready = True, True
        self.unavailable: str | None = None
        self.crash = False
        self.alert_rows = [alert(1), alert(2, "warning", sensor_id=XSS_ID, message=XSS_MESSAGE)]
        self.resolved_rows = [alert(3, "info", resolved=True)]

    def _check(self):
        if self.unavailable:
            raise Unavailable(self.unavailable, "connection refused")
        if self.crash:
            raise RuntimeError("secret internals")

    def health(self):
        return self.live, {"status": "ok" if self.live else "failing", "threads": {"kafka-consumer": self.live}}

    def ready(self):
        body = {"ready": self.is_ready, "failing": [] if self.is_ready else ["postgres"],
                "problems": {} if self.is_ready else {"postgres": "connection refused"}, "checks": {}}
        return self.is_ready, body

    def metrics_text(self):
        self.metrics.mqtt_received.inc(3)
        from prometheus_client import generate_latest
        return generate_latest(self.metrics.registry)

    def pipeline(self, history_s, errors):
        self._check()
        self.calls.append(("pipeline", history_s, errors))
        return {"uptime_s": 12.5, "throughput": {"mqtt_received": 4.0}, "history": []}

    def sensors(self, q, limit, offset, spark):
        self._check()
        self.calls.append(("sensors", q, limit, offset, spark))
        return {"total": 1, "offset": offset, "limit": limit, "sensors": [{"sensor_id": "hall-1", "metrics": {}}]}

    def sensor(self, sensor_id):
        self._check()
        self.calls.append(("sensor", sensor_id))
        return {"sensor_id": sensor_id, "metrics": {}} if sensor_id != "ghost" else None

    def trend(self, sensor_id, metric, period, start, end):
        self._check()
        self.calls.append(("trend", sensor_id, metric, period, start, end))
        return {"sensor_id": sensor_id, "metric": metric, "period": period, "t": [start], "avg": [1.0]}

    def alerts(self, status, severity, sensor_id, limit, state=None):
        self._check()
        self.calls.append(("alerts", status, severity, sensor_id, limit) + ((state,) if state else ()))
        return self.resolved_rows if status == "resolved" else self.alert_rows

    def snoozes(self, limit):
        self._check()
        return []

    def resolve_alert(self, alert_id):
        self._check()
        self.calls.append(("resolve", alert_id))
        if alert_id == 1:
            return "resolved", alert(1, resolved=True)
        if alert_id == 3:
            return "already_resolved", alert(3, resolved=True)
        return "not_found", None


@pytest.fixture
def view():
    return FakeView()


def client_for(view, token: str | None = TOKEN, **cfg):
    return create_app(view, DashboardConfig(**cfg), Secret(token) if token is not None else None).test_client()


@pytest.fixture
def client(view):
    return client_for(view)


BEARER = {"Authorization": f"Bearer {TOKEN}"}


def basic(password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"anyone:{password}".encode()).decode()}


# -- every endpoint answers ------------------------------------------------------------------------------
def test_pages_render(client):
    index = client.get("/")
    assert index.status_code == 200 and index.mimetype == "text/html"
    html = index.get_data(as_text=True)
    for element in ('id="stat-rate"', 'id="chart-throughput"', 'id="chart-latency"', 'id="health-checks"',
                    'id="recent-errors"', 'id="sensor-table"', 'id="chart-history"', 'id="open-alerts-table"',
                    'vendor/uplot/uPlot.iife.min.js', 'id="token-form"'):
        assert element in html
    assert client.get("/alerts").status_code == 200


def test_static_files_are_served_with_the_chart_library_and_its_license(client):
    js = client.get("/static/vendor/uplot/uPlot.iife.min.js")
    assert js.status_code == 200 and b"uPlot" in js.data[:200]
    assert b"MIT License" in client.get("/static/vendor/uplot/LICENSE").data
    for path in ("/static/js/dashboard.js", "/static/js/common.js", "/static/js/alerts.js", "/static/app.css"):
        assert client.get(path).status_code == 200, path


def test_json_endpoints_pass_parsed_parameters_to_the_view(client, view):
    assert client.get("/api/pipeline?history=120&errors=5").json["uptime_s"] == 12.5
    assert client.get("/api/sensors?q=hall&limit=10&offset=5&spark=30").json["total"] == 1
    assert client.get("/api/sensors/hall-1").json["sensor_id"] == "hall-1"
    trend = client.get("/api/sensors/hall-1/trend?metric=temperature&period=5m"
                       "&from=2025-10-09T08:00:00Z&to=2025-10-09T11:00:00%2B02:00")
    assert trend.status_code == 200
    alerts = client.get("/api/alerts?status=all&severity=warning&sensor_id=hall-1&limit=7").json
    assert alerts["count"] == 2 and alerts["status"] == "all"
    start = datetime(2025, 10, 9, 8, tzinfo=timezone.utc).timestamp()
    assert view.calls == [("pipeline", 120, 5), ("sensors", "hall", 10, 5, 30), ("sensor", "hall-1"),
                          ("trend", "hall-1", "temperature", "5m", start, start + 3600), ("alerts", "all", "warning", "hall-1", 7)]


def test_trend_defaults_to_the_last_hour_of_1m_points(client, view):
    client.get("/api/sensors/hall-1/trend?metric=temperature")
    _, _, _, period, start, end = view.calls[-1]
    assert period == "1m" and end - start == 3600


def test_metrics_is_prometheus_text(client):
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain; version=")
    assert b"pipeline_mqtt_messages_received_total 3.0" in r.data


def test_health_and_ready(client, view):
    assert client.get("/health").status_code == 200 and client.get("/ready").json["ready"] is True
    view.live, view.is_ready = False, False
    health = client.get("/health")
    assert health.status_code == 503 and health.json["status"] == "failing"
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json["failing"] == ["postgres"]
    assert ready.json["problems"]["postgres"] == "connection refused"


# -- 400: a bad parameter is named, never a 500 ------------------------------------------------------------
@pytest.mark.parametrize("url, parameter", [
    ("/api/alerts?status=closed", "status"),
    ("/api/alerts?limit=0", "limit"),
    ("/api/alerts?limit=1001", "limit"),
    ("/api/alerts?limit=ten", "limit"),
    ("/api/alerts?limit=99999999999999999999999", "limit"),
    ("/api/alerts?severity=" + "x" * 11, "severity"),
    ("/api/alerts?severity=crit%27--", "severity"),
    ("/api/alerts?sensor_id=" + "s" * 51, "sensor_id"),
    ("/api/sensors?limit=-1", "limit"),
    ("/api/sensors?spark=500", "spark"),
    ("/api/sensors?offset=x", "offset"),
    ("/api/sensors?q=" + "q" * 101, "q"),
    ("/api/sensors/" + "s" * 51, "sensor_id"),
    ("/api/sensors/hall-1/trend", "metric"),
    ("/api/sensors/hall-1/trend?metric=temp%20;drop", "metric"),
    ("/api/sensors/hall-1/trend?metric=temperature&period=2m", "period"),
    ("/api/sensors/hall-1/trend?metric=temperature&from=yesterday", "from"),
    ("/api/sensors/hall-1/trend?metric=temperature&to=1e400", "to"),
    ("/api/sensors/hall-1/trend?metric=temperature&from=2000&to=1000", "from"),
    ("/api/sensors/hall-1/trend?metric=temperature&period=1m&from=0&to=1000000", "from"),
    ("/api/pipeline?history=-5", "history"),
    ("/api/pipeline?errors=many", "errors"),
    ("/alerts?limit=abc", "limit"),
    ("/alerts?severity=%3Cb%3E", "severity"),
])
def test_bad_parameters_are_400_naming_the_parameter(client, view, url, parameter):
    r = client.get(url)
    assert r.status_code == 400, r.data
    assert r.json["parameter"] == parameter and r.json["error"].startswith(parameter + ":")
    assert not [c for c in view.calls if c[0] != "alerts"]  # nothing reached the data


def test_resolve_with_a_bad_id_is_400(client):
    for bad in ("abc", "0", "-3", "9" * 25):
        r = client.post(f"/api/alerts/{bad}/resolve", headers=BEARER)
        assert r.status_code == 400 and r.json["parameter"] == "id", bad


# -- resolving needs the token ---------------------------------------------------------------------------------
def test_resolve_with_the_token(client, view):
    r = client.post("/api/alerts/1/resolve", headers=BEARER)
    assert r.status_code == 200 and r.json["alert"]["resolved"] is True
    assert client.post("/api/alerts/3/resolve", headers=BEARER).status_code == 409
    missing = client.post("/api/alerts/42/resolve", headers=BEARER)
    assert missing.status_code == 404 and missing.json["error"] == "no alert 42"
    assert [c for c in view.calls if c[0] == "resolve"] == [("resolve", 1), ("resolve", 3), ("resolve", 42)]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer"},
                                     basic(TOKEN), {"Authorization": f"Token {TOKEN}"}])
def test_resolve_without_the_right_bearer_token_is_401(client, view, headers):
    r = client.post("/api/alerts/1/resolve", headers=headers)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert view.calls == []


def test_resolve_is_disabled_without_a_configured_token_and_the_page_says_so(view):
    client = client_for(view, token="")
    r = client.post("/api/alerts/1/resolve", headers={"Authorization": "Bearer "})
    assert r.status_code == 403 and "DASHBOARD_TOKEN is not set" in r.json["error"]
    assert view.calls == []
    assert "resolving alerts is disabled" in client.get("/").get_data(as_text=True)
    assert "disabled" in client.get("/alerts").get_data(as_text=True)


def test_resolve_only_by_post(client):
    assert client.get("/api/alerts/1/resolve", headers=BEARER).status_code == 405


# -- optional token for reads ------------------------------------------------------------------------------------
def test_reads_can_require_the_token(view):
    client = client_for(view, require_token_for_reads=True)
    for path in ("/", "/alerts", "/api/pipeline", "/api/sensors", "/api/alerts", "/metrics"):
        r = client.get(path)
        assert r.status_code == 401, path
        assert r.headers["WWW-Authenticate"].startswith("Basic")  # a browser asks for it
        assert client.get(path, headers=basic("wrong")).status_code == 401
        assert client.get(path, headers=basic(TOKEN)).status_code == 200, path
        assert client.get(path, headers=BEARER).status_code == 200, path
    assert client.get("/health").status_code == 200  # liveness stays open for the supervisor


def test_probes_stay_open_and_readiness_details_need_the_token(view):
    client = client_for(view, require_token_for_reads=True)
    view.is_ready = False
    assert client.get("/health").status_code == 200
    r = client.get("/ready")  # an orchestrator's probe: the status code, and what is failing
    assert r.status_code == 503 and r.get_json() == {"ready": False, "failing": ["postgres"]}
    r = client.get("/ready", headers=BEARER)
    assert r.status_code == 503 and r.get_json()["problems"] == {"postgres": "connection refused"}


def test_reads_are_open_by_default(view):
    client = client_for(view, token=None)
    assert client.get("/api/alerts").status_code == 200 and client.get("/metrics").status_code == 200


def test_token_for_reads_without_a_token_is_refused():
    with pytest.raises(ConfigError, match="^dashboard.require_token_for_reads: needs DASHBOARD_TOKEN"):
        create_app(FakeView(), DashboardConfig(require_token_for_reads=True), Secret(""))


# -- 404, 503, 500 ------------------------------------------------------------------------------------------------
def test_unknown_things_are_404(client):
    assert client.get("/api/sensors/ghost").status_code == 404
    api = client.get("/api/nothing")
    assert api.status_code == 404 and api.is_json
    page = client.get("/nothing")
    assert page.status_code == 404 and page.mimetype == "text/html"


def test_an_unavailable_dependency_is_503_naming_it(client, view):
    view.unavailable = "postgres"
    for path in ("/api/alerts", "/api/sensors/hall-1/trend?metric=temperature", "/api/pipeline"):
        r = client.get(path)
        assert r.status_code == 503 and r.json["dependency"] == "postgres", path
    view.unavailable = "redis"
    assert client.get("/api/sensors").json["dependency"] == "redis"
    assert client.post("/api/alerts/1/resolve", headers=BEARER).status_code == 503


def test_an_unexpected_error_is_500_without_details(client, view):
    view.crash = True
    r = client.get("/api/alerts")
    assert r.status_code == 500 and "secret internals" not in r.get_data(as_text=True)
    page = client.get("/alerts")
    assert page.status_code == 500 and "secret internals" not in page.get_data(as_text=True)


# -- headers and escaping -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/alerts", "/api/alerts", "/metrics", "/health", "/api/nothing",
                                  "/static/app.css"])
def test_security_headers(client, path):
    h = client.get(path).headers
    assert h["X-Content-Type-Options"] == "nosniff" and h["X-Frame-Options"] == "DENY"
    assert h["Referrer-Policy"] == "no-referrer"
    csp = h["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp


def test_api_responses_are_not_cached(client):
    assert client.get("/api/alerts").headers["Cache-Control"] == "no-store"
    assert client.get("/ready").headers["Cache-Control"] == "no-store"


def test_alerts_page_escapes_sensor_ids_and_messages(client):
    html = client.get("/alerts").get_data(as_text=True)
    assert XSS_ID not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt; too hot" in html


def test_the_page_has_no_inline_script_or_style(client):
    html = client.get("/").get_data(as_text=True) + client.get("/alerts").get_data(as_text=True)
    assert "<script>" not in html and "<style" not in html and " style=" not in html and "onclick" not in html


def test_requests_are_counted_by_route_template(client, view):
    client.get("/api/sensors/hall-1")
    client.get("/api/sensors/hall-2")
    client.get("/api/alerts?limit=x")
    get = view.metrics.registry.get_sample_value
    assert get("pipeline_dashboard_http_requests_total", {"route": "/api/sensors/<sensor_id>", "status": "200"}) == 2
    assert get("pipeline_dashboard_http_requests_total", {"route": "/api/alerts", "status": "400"}) == 1


def test_api_mappings_serves_the_views_mapping_counts(view):
    view.mappings = lambda: {"mappings": [{"name": "tasmota", "messages": 3, "refused": 1,
                                           "last_refused": {"reason": "timestamp_missing"}}]}
    body = client_for(view).get("/api/mappings").json
    assert body["mappings"][0]["name"] == "tasmota" and body["mappings"][0]["last_refused"]["reason"] == "timestamp_missing"
