"""Pure pieces behind the dashboard: rates and quantiles from sampled metrics, the recent-error memory,
parameter parsing, consumer lag, probe caching, and the readiness rules over a fake pipeline status."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from pipeline.config import DashboardConfig, parse
from pipeline.dashboard import params
from pipeline.dashboard.store import parse_latest
from pipeline.dashboard.view import PipelineView, Probe
from pipeline.clients.kafka import partition_lag
from pipeline.observability.metrics import LATENCY_BUCKETS, Metrics
from pipeline.observability.rates import LiveStats, counter_totals, histogram_counts, quantile
from pipeline.observability.recent import ErrorLogHandler, RecentErrors
from pipeline.observability.status import ConsumerStatus, MqttStatus, ReloadStatus, SinkStatus
from pipeline.records import DeadLetter
from tests.unit.helpers import raw

INF = float("inf")


# -- rates and quantiles ----------------------------------------------------------------------------------
def test_quantile_interpolates_like_histogram_quantile():
    bounds = (0.1, 0.2, 0.4, INF)
    assert quantile(bounds, (0, 0, 0, 0), 0.5) is None
    assert quantile(bounds, (10, 10, 10, 10), 0.5) == pytest.approx(0.05)  # all in the first bucket
    assert quantile(bounds, (0, 10, 20, 20), 0.5) == pytest.approx(0.2)
    assert quantile(bounds, (0, 10, 20, 20), 0.75) == pytest.approx(0.3)
    assert quantile(bounds, (0, 0, 10, 20), 0.95) == pytest.approx(0.4)  # in +Inf: the highest finite bound


def test_counter_totals_and_histogram_counts_read_prometheus_metrics():
    m = Metrics(CollectorRegistry())
    m.invalid.labels("decode", "invalid_json").inc(2)
    m.invalid.labels("validate", "invalid_json").inc(1)
    m.invalid.labels("validate", "value_not_number").inc(4)
    assert counter_totals(m.invalid, "reason") == {"invalid_json": 3, "value_not_number": 4}
    assert counter_totals(m.invalid) == {"": 7}
    for v in (0.004, 0.02, 0.02, 3.0):
        m.e2e_latency.labels("postgres").observe(v)
    bounds, counts = histogram_counts(m.e2e_latency, "sink")["postgres"]
    assert bounds == (*LATENCY_BUCKETS, INF) and counts[0] == 1 and counts[2] == 3 and counts[-1] == 4


def test_live_stats_rates_over_the_window_and_bounded_history():
    stats = LiveStats(window_s=5, history_s=4)
    bounds = (0.1, 1.0, INF)
    for t in range(10):
        point = stats.add(100.0 + t, {"received": 10.0 * t}, {"e2e:postgres": (bounds, (2 * t, 4 * t, 4 * t))})
    assert point["rates"]["received"] == pytest.approx(10.0)
    # In the last 5 s: 10 observations below 0.1 s and 10 between 0.1 and 1 s.
    assert point["latency"]["e2e:postgres"]["count"] == 20
    assert point["latency"]["e2e:postgres"]["p50"] == pytest.approx(0.1)
    assert len(stats.points) == 4 and [p["t"] for p in stats.history(2.5)] == [107.0, 108.0, 109.0]


def test_live_stats_survive_a_counter_reset():
    stats = LiveStats(window_s=5)
    stats.add(0.0, {"x": 100.0}, {"h": ((1.0, INF), (50.0, 50.0))})
    point = stats.add(1.0, {"x": 3.0}, {"h": ((1.0, INF), (2.0, 2.0))})
    assert point["rates"]["x"] == 0.0 and point["latency"]["h"]["count"] == 0.0


# -- recent errors ----------------------------------------------------------------------------------------------
def test_recent_errors_keep_the_newest_and_truncate():
    recent = RecentErrors(size=3, clock=lambda: 1000.0)
    for i in range(5):
        recent.add("validate", f"r{i}", "e" * 1000, sample=b"\xff" + b"x" * 500)
    items = recent.items()
    assert [i["reason"] for i in items] == ["r4", "r3", "r2"]
    assert len(items[0]["error"]) == 300 and len(items[0]["sample"]) == 200 and items[0]["sample"][0] == "\ufffd"


def test_dead_letters_become_recent_errors_with_a_payload_sample():
    recent = RecentErrors(clock=lambda: 5.0)
    msg = raw("t/<script>", b'{"value": "hot"}', offset=7)
    recent.add_dead_letters([DeadLetter(msg, "value_not_number", "validate", "value must be a number")])
    (item,) = recent.items()
    assert item == {"time": 5.0, "stage": "validate", "reason": "value_not_number", "kind": "invalid",
                    "error": "value must be a number", "sample": '{"value": "hot"}', "mqtt_topic": "t/<script>",
                    "partition": 0, "offset": 7}


def test_logged_warnings_become_recent_errors():
    recent = RecentErrors()
    logger = logging.getLogger("pipeline.sinks.base.test")
    dashboard = logging.getLogger("pipeline.dashboard.test")
    handler = ErrorLogHandler(recent)
    logger.addHandler(handler)
    dashboard.addHandler(handler)
    try:
        logger.info("event=flushed records=3")
        logger.warning("event=retry operation=postgres_write attempt=%d error=%r", 2, "connection refused")
        dashboard.warning("event=dashboard_error path=/api/alerts")  # the page shows its own troubles
    finally:
        logger.removeHandler(handler)
        dashboard.removeHandler(handler)
    (item,) = recent.items()
    assert item["stage"] == "sinks.base.test" and item["reason"] == "retry" and item["kind"] == "warning"
    assert "connection refused" in item["error"]


# -- parameters, lag, latest values -------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("1760000000", 1760000000.0),
    ("1760000000.5", 1760000000.5),
    ("2025-10-09T08:53:20Z", 1760000000.0),
    ("2025-10-09T08:53:20", 1760000000.0),
    ("2025-10-09T10:53:20+02:00", 1760000000.0),
    ("2025-10-09T10:53:20 02:00", 1760000000.0),  # '+' arrived as a space
])
def test_timestamps_in_query_strings(text, expected):
    assert params.timestamp({"from": text}, "from") == expected


@pytest.mark.parametrize("text", ["soon", "nan", "inf", "-5", "99999999999", "2025-13-01"])
def test_bad_timestamps(text):
    with pytest.raises(params.BadParam) as err:
        params.timestamp({"to": text}, "to")
    assert err.value.name == "to"


def test_control_characters_are_refused():
    with pytest.raises(params.BadParam, match="control characters"):
        params.check_text("a\x00b", "q", 10)


def test_partition_lag_from_watermarks_and_commits():
    # p0 committed at 90 of 100; p1 never committed (counts from its low watermark); p2 caught up.
    assert partition_lag({0: 100, 1: 50, 2: 7}, {0: 90, 2: 7}, {1: 20}) == {0: 10, 1: 30, 2: 0}
    assert partition_lag({0: 5}, {0: 9}, {}) == {0: 0}  # never negative


def test_parse_latest_hash_as_the_redis_sink_writes_it():
    parsed = parse_latest({"type": "environment", "location": "", "temperature": "21.5", "temperature:ts": "1760000000.0",
                           "humidity": "40.0", "humidity:ts": "1760000005.0", "note": "not a number"})
    assert parsed == {"type": "environment", "location": None, "updated_at": 1760000005.0,
                      "metrics": {"humidity": {"value": 40.0, "ts": 1760000005.0},
                                  "temperature": {"value": 21.5, "ts": 1760000000.0}}}


# -- probes --------------------------------------------------------------------------------------------------------
def test_probe_reuses_its_result_within_the_ttl_and_reports_failures():
    now = [0.0]
    calls = []

    def check():
        calls.append(now[0])
        if len(calls) == 2:
            raise ConnectionError("refused")
        return "fine"

    probe = Probe(check, ttl=2.0, clock=lambda: now[0])
    assert probe.get() == (True, "fine")
    now[0] = 1.0
    assert probe.get() == (True, "fine") and calls == [0.0]
    now[0] = 2.5
    assert probe.get() == (False, "ConnectionError: refused")
    now[0] = 5.0
    assert probe.get() == (True, "fine") and len(calls) == 3


# -- readiness over a fake status -----------------------------------------------------------------------------------
class FakeStatus:
    """The pipeline's status interface with values a test sets."""

    def __init__(self, now: float, sinks: list[SinkStatus], connected: bool):
        self.instance_id = "test"
        self.started_at = now - 100
        self.metrics = Metrics(CollectorRegistry())  # the view's metrics, kept here for the tests to read
        self.alive = {"kafka-consumer": True, "sink-postgres": True}
        self.failed: list[tuple[str, str]] = []
        self.sink_list = sinks
        self.consumer_status = ConsumerStatus(True, True, "2 partition(s) assigned", 0, 2)
        self.connected = connected
        self.reload = ReloadStatus()

    def threads(self):
        return dict(self.alive)

    def failures(self):
        return list(self.failed)

    def sinks(self):
        return list(self.sink_list)

    def consumer(self):
        return self.consumer_status

    def mqtt(self):
        return MqttStatus(self.connected, "localhost", 1883)

    def broker_drops(self):
        return None

    def config_reload(self):
        return self.reload

    def on_dead_letters(self, listener):
        pass


def fake_sink(name, last_success, waiting=0) -> SinkStatus:
    return SinkStatus(name, waiting, last_success)


def fake_view(now=1000.0, sinks=None, connected=True, **cfg):
    status = FakeStatus(now, sinks or [fake_sink("postgres", now - 1), fake_sink("redis", now - 1)], connected)
    view = PipelineView(status, status.metrics, parse({}, {}).kafka, store=None, cfg=DashboardConfig(**cfg),
                        recent=RecentErrors(), clock=lambda: now)
    view.probes = {name: Probe(lambda: "ok", 1.0) for name in ("kafka", "postgres", "redis")}
    return view, status


def test_ready_when_everything_passes():
    view, pipeline = fake_view()
    ok, body = view.ready()
    assert ok and body["failing"] == [] and set(body["checks"]) == {
        "threads", "mqtt", "kafka", "postgres", "redis", "consumer", "sinks", "consumer_lag", "config"}
    assert pipeline.metrics.registry.get_sample_value("pipeline_dependency_up", {"dependency": "kafka"}) == 1
    assert pipeline.metrics.registry.get_sample_value("pipeline_ready") == 1


def test_not_ready_names_each_failing_dependency():
    view, pipeline = fake_view(connected=False)
    view.probes["postgres"] = Probe(lambda: (_ for _ in ()).throw(OSError("connection refused")), 1.0)
    pipeline.alive["kafka-consumer"] = False
    ok, body = view.ready()
    assert not ok and body["failing"] == ["threads", "mqtt", "postgres"]
    assert body["problems"]["postgres"] == "OSError: connection refused"
    assert "kafka-consumer" in body["problems"]["threads"]
    assert pipeline.metrics.registry.get_sample_value("pipeline_dependency_up", {"dependency": "postgres"}) == 0
    assert pipeline.metrics.registry.get_sample_value("pipeline_ready") == 0  # what the PipelineNotReady rule reads
    live, health = view.health()
    assert not live and health["threads"]["kafka-consumer"] is False


def test_a_sink_is_stale_only_with_work_waiting_and_no_recent_write():
    now = 1000.0
    idle = fake_sink("redis", now - 500)  # idle for long: fine, nothing to write
    stuck = fake_sink("postgres", now - 90, waiting=3)
    view, _ = fake_view(now, sinks=[stuck, idle], stale_write_after_s=60)
    ok, body = view.ready()
    assert not ok and body["failing"] == ["sinks"]
    sinks = body["checks"]["sinks"]["sinks"]
    assert sinks["redis"]["ok"] and not sinks["postgres"]["ok"] and sinks["postgres"]["queue_depth"] == 3
    assert body["problems"]["sinks"] == "postgres: no successful write for 90s with 3 batch(es) waiting"


def test_a_blocked_sink_fails_readiness_at_once_with_the_stores_message():
    now = 1000.0
    message = "refused: OutOfMemoryError: OOM command not allowed when used memory > 'maxmemory'."
    blocked = SinkStatus("redis", 2, now - 3, now - 3, message)  # a few seconds: not stale yet, but blocked
    view, _ = fake_view(now, sinks=[fake_sink("postgres", now - 1), blocked], stale_write_after_s=60)
    ok, body = view.ready()
    assert not ok and body["failing"] == ["sinks"]
    assert body["problems"]["sinks"] == f"redis: blocked for 3s, holding its batch: {message}"
    sinks = body["checks"]["sinks"]["sinks"]
    assert sinks["redis"]["blocked"] == message and sinks["redis"]["blocked_s"] == 3.0 and sinks["postgres"]["ok"]


def test_a_best_effort_sink_shows_its_lag_and_never_fails_readiness():
    now = 1000.0
    behind = SinkStatus("jsonl", 1, now - 600, now - 30, "unreachable: timed out", best_effort=True, lag=5000,
                        feed="5000 records behind on 4 partition(s)")
    view, _ = fake_view(now, sinks=[fake_sink("postgres", now - 1), behind], stale_write_after_s=60)
    ok, body = view.ready()
    assert ok and body["failing"] == []
    jsonl = body["checks"]["sinks"]["sinks"]["jsonl"]
    assert jsonl["ok"] and jsonl["best_effort"] and jsonl["lag"] == 5000 and jsonl["blocked"] == "unreachable: timed out"
    assert jsonl["detail"].startswith("best-effort, 5000 records behind on 4 partition(s); blocked for 30s")


def test_consumer_lag_fails_readiness_only_above_the_configured_limit():
    view, pipeline = fake_view(ready_max_consumer_lag=100)
    view.lag = {0: 60, 1: 30}
    assert view.ready()[0]
    assert pipeline.metrics.registry.get_sample_value("pipeline_ready") == 1
    view.lag = {0: 60, 1: 50}
    ok, body = view.ready()
    assert not ok and body["failing"] == ["consumer_lag"] and body["checks"]["consumer_lag"]["total"] == 110
    assert pipeline.metrics.registry.get_sample_value("pipeline_ready") == 0  # the same verdict as /ready


def test_a_refused_reload_is_reported_but_keeps_the_pipeline_ready():
    view, pipeline = fake_view()
    pipeline.reload = ReloadStatus("mqtt.port: Expected `int` <= 65535", ())
    ok, body = view.ready()
    assert ok and body["checks"]["config"]["last_reload_error"] == "mqtt.port: Expected `int` <= 65535"
    assert body["checks"]["config"]["detail"] == "last reload refused: mqtt.port: Expected `int` <= 65535"
    pipeline.reload = ReloadStatus(None, ("kafka.bootstrap_servers",))
    ok, body = view.ready()
    assert ok and body["checks"]["config"]["detail"] == "changed, needs a restart: kafka.bootstrap_servers"


def test_sampling_sets_write_ages_and_queue_depths():
    now = 1000.0
    view, pipeline = fake_view(now, sinks=[fake_sink("postgres", now - 12, waiting=2), fake_sink("redis", None)])
    pipeline.metrics.mqtt_received.inc(5)
    point = view.sample()
    get = pipeline.metrics.registry.get_sample_value
    assert get("pipeline_sink_last_success_age_seconds", {"sink": "postgres"}) == 12
    assert get("pipeline_sink_last_success_age_seconds", {"sink": "redis"}) == 100  # never: since start
    assert get("pipeline_queue_depth", {"queue": "postgres"}) == 2
    # Every sink has its blocked series from the start (the PipelineSinkBlocked rule needs one), 0 until it blocks.
    assert get("pipeline_sink_blocked", {"sink": "redis"}) == 0 and get("pipeline_sink_blocked", {"sink": "postgres"}) == 0
    assert point["rates"]["mqtt_received"] == 0.0 and "e2e:postgres" not in point["latency"]


def test_consumer_must_be_running_and_not_stalled_but_may_hold_no_partitions():
    view, pipeline = fake_view()
    pipeline.consumer_status = ConsumerStatus(False, False, "not started")
    ok, body = view.ready()
    assert not ok and body["failing"] == ["consumer"] and body["problems"]["consumer"] == "not started"
    pipeline.consumer_status = ConsumerStatus(True, True, "running, no partitions assigned")
    ok, body = view.ready()
    assert ok and body["checks"]["consumer"]["detail"].startswith("running, no partitions assigned")
    pipeline.consumer_status = ConsumerStatus(True, False, "consumer c1 has had no partitions")
    ok, body = view.ready()
    assert not ok and body["problems"]["consumer"] == "consumer c1 has had no partitions"


def test_kafka_is_not_asked_about_the_topics_before_the_pipeline_created_them():
    asked = []

    class Admin:
        def list_topics(self, topic=None, timeout=None):
            asked.append(topic)
            topics = {topic: SimpleNamespace(error=None, partitions={0: None, 1: None})} if topic else {}
            return SimpleNamespace(brokers={1: None}, topics=topics)

    view, pipeline = fake_view()
    view._admin_client = Admin()
    pipeline.consumer_status = ConsumerStatus(False, False, "not started")
    assert view._check_kafka() == "1 broker(s) reachable"
    view._consumer_lag()
    assert asked == [None]  # a request naming the topic could make the broker create it with its defaults
    pipeline.consumer_status = ConsumerStatus(True, True, "")
    assert view._check_kafka().endswith("has 2 partitions") and asked[-1] == "sensor-readings"
