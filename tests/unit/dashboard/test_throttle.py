"""Wrong dashboard tokens are throttled per client address: the bucket itself, and 429 with Retry-After in the app."""
from __future__ import annotations

import pytest

from pipeline.config import DashboardConfig, Secret
from pipeline.dashboard import create_app
from pipeline.dashboard.throttle import FailureThrottle
from tests.unit.dashboard.test_app import BEARER, TOKEN, FakeView, basic

WRONG = {"Authorization": "Bearer not-the-token-at-all"}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_burst_of_failures_then_one_per_refill_interval():
    clock = Clock()
    t = FailureThrottle(burst=3, window_s=30.0, clock=clock)  # one failure forgiven every 10 s
    assert [t.failed("a") for _ in range(2)] == [0.0, 0.0]
    assert t.failed("a") == pytest.approx(10.0)  # the third empties the bucket
    assert t.retry_after("a") == pytest.approx(10.0) and t.retry_after("b") == 0.0  # per address
    clock.now += 4
    assert t.retry_after("a") == pytest.approx(6.0)
    clock.now += 6
    assert t.retry_after("a") == 0.0
    assert t.failed("a") == pytest.approx(10.0)  # one try, then blocked again
    clock.now += 30
    assert [t.failed("a") for _ in range(3)][:2] == [0.0, 0.0]  # refilled, never beyond the burst


def test_memory_stays_bounded():
    clock = Clock()
    t = FailureThrottle(burst=2, window_s=10.0, max_clients=100, clock=clock)
    for i in range(1000):
        t.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(t._buckets) <= 100
    t.failed("x")
    t.failed("x")
    assert t.retry_after("x") > 0  # the newest are kept


@pytest.mark.parametrize("path, method", [("/api/pipeline", "get"), ("/metrics", "get"), ("/api/alerts/1/resolve", "post")])
def test_after_ten_wrong_tokens_the_address_gets_429_even_with_the_right_one(path, method):
    app = create_app(FakeView(), DashboardConfig(host="0.0.0.0"), Secret(TOKEN))
    client = app.test_client()
    call = getattr(client, method)
    for _ in range(10):
        assert call(path, headers=WRONG).status_code == 401
    r = call(path, headers=WRONG)
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 6
    assert call(path, headers=BEARER).status_code == 429  # no comparison while throttled
    other = {"REMOTE_ADDR": "192.0.2.7"}
    assert call(path, headers=BEARER, environ_base=other).status_code != 429  # another address is not


def test_requests_without_a_token_are_not_counted_and_health_probes_stay_open():
    client = create_app(FakeView(), DashboardConfig(host="0.0.0.0"), Secret(TOKEN)).test_client()
    for _ in range(30):
        assert client.get("/api/pipeline").status_code == 401
    assert client.get("/api/pipeline", headers=BEARER).status_code == 200
    for _ in range(15):
        client.get("/ready", headers=basic("wrong-wrong-wrong"))  # a guess through /ready counts too
    assert client.get("/api/pipeline", headers=BEARER).status_code == 429
    assert client.get("/health").status_code == 200 and client.get("/ready").get_json() == {"ready": True, "failing": []}
