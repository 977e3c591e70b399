"""Who may talk to the dashboard: the Host header check (DNS rebinding), the loopback rule that makes reads
need DASHBOARD_TOKEN, and the refusal of a dashboard beyond loopback without a token."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import config as c
from pipeline.config import ConfigError, DashboardConfig, Secret
from pipeline.config.serving import is_loopback_host, reads_need_token
from pipeline.dashboard import create_app
from pipeline.dashboard.hosts import allowed_names, host_allowed, normalize
from tests.unit.dashboard.test_app import BEARER, TOKEN, FakeView

ROOT = Path(__file__).resolve().parents[3]


# -- the Host header check ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("header, name", [
    ("localhost:8080", "localhost"), ("LocalHost", "localhost"), ("[::1]:8080", "::1"), ("[::1]", "::1"),
    ("::1", "::1"), ("example.org.", "example.org"), ("dash.example.org:443", "dash.example.org"),
])
def test_names_are_compared_without_port_case_or_brackets(header, name):
    assert normalize(header) == name


def test_default_names_are_local_ones_the_host_and_this_machine():
    names = allowed_names(DashboardConfig(host="dash.lan"), hostname="box.example.org")
    assert names == {"localhost", "127.0.0.1", "::1", "dash.lan", "box.example.org", "box"}
    assert allowed_names(DashboardConfig(allowed_hosts=("Grafana.Example.org",)), hostname="box") >= {"grafana.example.org"}
    assert allowed_names(DashboardConfig(allowed_hosts=("*",))) is None


@pytest.mark.parametrize("header, ok", [
    ("localhost:8080", True), ("127.0.0.1:8080", True), ("[::1]:8080", True), ("box:8080", True),
    ("box.example.org", True), ("192.168.1.20:8080", True), ("[fe80::1]:8080", True),  # an address: no rebinding
    (None, True),  # no Host at all (HTTP/1.0 probes); a browser always sends one
    ("evil.example:8080", False), ("localhost.evil.example", False), ("box.evil.example", False), ("", False),
    ("localhost:8080:80", False),
])
def test_host_allowed(header, ok):
    assert host_allowed(header, allowed_names(DashboardConfig(), hostname="box.example.org")) is ok


@pytest.mark.parametrize("value", ['"*"', '["*"]', '[dash.example.org, "*"]'])
def test_star_turns_the_check_off(value):
    cfg = c.parse({}, {"PIPELINE__DASHBOARD__ALLOWED_HOSTS": value}).dashboard
    assert host_allowed("evil.example", allowed_names(cfg))


def test_allowed_hosts_is_a_list_of_names_or_star():
    assert c.parse({"dashboard": {"allowed_hosts": ["a.example", "b.example"]}}).dashboard.allowed_hosts == ("a.example", "b.example")
    with pytest.raises(ConfigError, match=r"^dashboard.allowed_hosts"):
        c.parse({"dashboard": {"allowed_hosts": "a.example"}})


def test_an_unknown_host_gets_400_before_anything_else():
    app = create_app(FakeView(), DashboardConfig(require_token_for_reads=True), Secret(TOKEN))
    for path in ("/", "/api/pipeline", "/metrics", "/health", "/ready", "/static/app.js"):
        r = app.test_client().get(path, base_url="http://evil.example:8080", headers=BEARER)
        assert r.status_code == 400, path
        assert "dashboard.allowed_hosts" in r.get_json()["error"]
    r = app.test_client().post("/api/alerts/1/resolve", base_url="http://evil.example", headers=BEARER)
    assert r.status_code == 400
    # Health probes by address keep working.
    assert app.test_client().get("/health", base_url="http://127.0.0.1:8080").status_code == 200
    assert app.test_client().get("/api/pipeline", base_url="http://localhost:8080", headers=BEARER).status_code == 200


def test_a_configured_name_is_served():
    app = create_app(FakeView(), DashboardConfig(allowed_hosts=("dash.example.org",)), Secret(TOKEN))
    assert app.test_client().get("/api/pipeline", base_url="https://dash.example.org").status_code == 200
    assert app.test_client().get("/api/pipeline", base_url="https://other.example.org").status_code == 400


# -- the loopback rule --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.20", False), ("10.0.0.5", False), ("fe80::1", False),
    ("box.example.org", False),  # a name may resolve anywhere
])
def test_loopback_hosts(host, loopback):
    assert is_loopback_host(host) is loopback
    assert reads_need_token(DashboardConfig(host=host)) is not loopback
    assert reads_need_token(DashboardConfig(host=host, require_token_for_reads=True))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20"])
def test_reads_need_the_token_beyond_loopback(host):
    client = create_app(FakeView(), DashboardConfig(host=host), Secret(TOKEN)).test_client()
    for path in ("/", "/alerts", "/api/pipeline", "/api/sensors", "/metrics"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=BEARER).status_code == 200, path
    assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200


def test_reads_stay_open_on_loopback():
    client = create_app(FakeView(), DashboardConfig(host="127.0.0.1"), Secret(TOKEN)).test_client()
    assert client.get("/api/pipeline").status_code == 200 and client.get("/metrics").status_code == 200


# -- the refusal --------------------------------------------------------------------------------------------------
def test_beyond_loopback_without_a_token_is_refused_naming_host_and_token():
    with pytest.raises(ConfigError, match=r"^dashboard.host: '0.0.0.0' .*DASHBOARD_TOKEN"):
        create_app(FakeView(), DashboardConfig(host="0.0.0.0"), Secret(""))
    env = {"PIPELINE__DASHBOARD__HOST": "0.0.0.0"}
    with pytest.raises(ConfigError, match=r"^dashboard.host: '0.0.0.0' .*DASHBOARD_TOKEN"):
        c.load(ROOT / "config.yaml", env=env)  # what --check-config and a reload see
    assert c.load(ROOT / "config.yaml", env={**env, "DASHBOARD_TOKEN": TOKEN}).config.dashboard.host == "0.0.0.0"
    assert not c.load(ROOT / "config.yaml", env={**env, "PIPELINE__DASHBOARD__ENABLED": "false"}).config.dashboard.enabled
    assert c.load(ROOT / "config.yaml", env={}).config.dashboard.host == "127.0.0.1"  # the shipped default starts


# -- what /health tells a caller without the token -----------------------------------------------------------------
def test_health_beyond_loopback_gives_only_the_status_without_the_token():
    view = FakeView()
    view.live = False
    client = create_app(view, DashboardConfig(host="0.0.0.0"), Secret(TOKEN)).test_client()
    r = client.get("/health")
    assert r.status_code == 503 and r.get_json() == {"status": "failing"}  # no thread names, no crash text
    r = client.get("/health", headers=BEARER)
    assert r.status_code == 503 and r.get_json()["threads"] == {"kafka-consumer": False}
    loopback = create_app(view, DashboardConfig(host="127.0.0.1"), Secret(TOKEN)).test_client()
    assert loopback.get("/health").get_json()["threads"] == {"kafka-consumer": False}


# -- the token's length -------------------------------------------------------------------------------------------
def test_a_short_token_is_refused_naming_the_variable():
    with pytest.raises(ConfigError, match=r"^DASHBOARD_TOKEN: 15 characters, at least 16"):
        c.load(ROOT / "config.yaml", env={"DASHBOARD_TOKEN": "x" * 15})
    with pytest.raises(ConfigError, match=r"^DASHBOARD_TOKEN: 6 characters"):
        create_app(FakeView(), DashboardConfig(), Secret("hunter"))
    assert c.load(ROOT / "config.yaml", env={"DASHBOARD_TOKEN": "x" * 16}).secrets.dashboard_token
    # A disabled dashboard does not use the token: not checked.
    c.load(ROOT / "config.yaml", env={"DASHBOARD_TOKEN": "short", "PIPELINE__DASHBOARD__ENABLED": "false"})
