"""Offset continuity against the real broker: a layer between the consumer and what it fetched withholds a
range of one partition's records, once (the consumer fetches them again and stores everything) or for good
(an alert, /ready not ready naming partition and offsets, and no commit at or past the hole)."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import confluent_kafka
from confluent_kafka import Producer

import pipeline.ingest.dispatch as dispatch
from pipeline.ingest.continuity import sensor_id
from pipeline.ingest.identity import MQTT_TOPIC_HEADER, RECEIVED_US_HEADER
from tests.integration.clients import RunningPipeline, committed_offsets, wait_for

HOLE_PARTITION, FIRST, LAST = 0, 40, 46  # 7 consecutive records: one producer batch, as seen in the benchmark
PER_PARTITION = 150


class Withholding(confluent_kafka.Consumer):
    """The real consumer, but records FIRST..LAST of HOLE_PARTITION are not handed out (`times` deliveries
    each, None: never), as when a broker makes a batch visible only after a later one."""

    times: int | None = 1
    withheld: dict[int, int] = {}

    def _filter(self, msgs: list) -> list:
        out = []
        for m in msgs:
            if m.error() is None and m.partition() == HOLE_PARTITION and FIRST <= m.offset() <= LAST:
                seen = self.withheld.get(m.offset(), 0)
                if self.times is None or seen < self.times:
                    self.withheld[m.offset()] = seen + 1
                    continue
            out.append(m)
        return out

    def poll(self, timeout=None):
        msg = super().poll(timeout)
        return None if msg is None else next(iter(self._filter([msg])), None)

    def consume(self, num_messages=1, timeout=-1):
        return self._filter(super().consume(num_messages, timeout))


def withhold(monkeypatch, times: int | None) -> type[Withholding]:
    cls = type("WithholdingConsumer", (Withholding,), {"times": times, "withheld": {}})
    monkeypatch.setattr(dispatch, "Consumer", cls)
    return cls


def produce(env, partitions=(0, 1)) -> int:
    """PER_PARTITION readings into each partition of the raw topic, as the bridge writes them; returns the count."""
    producer = Producer({"bootstrap.servers": "127.0.0.1:9092", "linger.ms": 5})
    topic, t0 = env.settings().config.kafka.topics.raw, time.time() - 600
    for p in partitions:
        for i in range(PER_PARTITION):
            sensor = f"{env.root}/dev-{p}-{i % 5}"
            body = json.dumps({"metric": "temperature", "value": i % 30, "timestamp": t0 + i * 0.01}).encode()
            producer.produce(topic, body, key=sensor.encode(), partition=p,
                             headers=[(MQTT_TOPIC_HEADER, sensor.encode()), (RECEIVED_US_HEADER, str(int(time.time() * 1e6)).encode())])
    assert producer.flush(20) == 0
    return PER_PARTITION * len(partitions)


def stored(env) -> int:
    return env.query("SELECT count(*) FROM measurements WHERE sensor_id LIKE %s", (f"dev-%",))[0][0]


def gaps(metrics, event: str) -> float:
    return metrics.registry.get_sample_value("pipeline_kafka_offset_gaps_total", {"event": event}) or 0


def test_records_withheld_once_are_fetched_again_and_all_stored(env, monkeypatch):
    consumer = withhold(monkeypatch, times=1)
    settings = env.migrate(env.settings())
    metrics = env.metrics()
    topic = settings.config.kafka.topics.raw
    with RunningPipeline(settings, metrics) as pipeline:
        sent = produce(env)
        wait_for(lambda: stored(env) >= sent, 30, what=f"{sent} rows in measurements")
        committed = wait_for(lambda: (lambda c: c if c.get(0) == PER_PARTITION and c.get(1) == PER_PARTITION else None)(
            committed_offsets(settings.config.kafka.consumer_group, topic)), 20, what="every offset committed")
        assert sorted(consumer.withheld) == list(range(FIRST, LAST + 1))  # the layer did withhold them once
        assert stored(env) == sent and committed == {0: PER_PARTITION, 1: PER_PARTITION}
        assert gaps(metrics, "detected") >= 1 and gaps(metrics, "refetched") >= 1 and gaps(metrics, "given_up") == 0
        assert pipeline.source.status()[0]


def test_records_withheld_for_good_raise_an_alert_and_hold_the_commit(env, monkeypatch):
    consumer = withhold(monkeypatch, times=None)
    settings = env.migrate(env.settings(
        kafka={"gap_refetch_attempts": 2, "gap_refetch_wait_s": 1, "gap_report_interval_s": 1},
        dashboard={"enabled": True, "port": 0, "probe_cache_s": 0.5}))
    metrics = env.metrics()
    cfg = settings.config.kafka
    with RunningPipeline(settings, metrics) as pipeline:
        sent = produce(env)
        missing = LAST - FIRST + 1
        wait_for(lambda: stored(env) >= sent - missing, 30, what="everything but the hole stored")
        wait_for(lambda: gaps(metrics, "given_up") >= 1, 20, what="the hole given up")
        sensor = sensor_id(cfg.topics.raw, HOLE_PARTITION)
        alert = wait_for(lambda: env.query("SELECT type, severity, message FROM alerts WHERE sensor_id = %s "
                                           "AND NOT COALESCE(resolved, false)", (sensor,)), 20, what="the gap alert")
        assert alert[0][:2] == ("threshold", "critical")
        assert f"kafka_offset_gap of sensor {sensor} is {missing}," in alert[0][2]

        try:
            with urllib.request.urlopen(pipeline.dashboard.url + "/ready", timeout=10) as r:
                status, body = r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            status, body = err.code, json.loads(err.read())
        assert status == 503 and "consumer" in body["failing"]
        assert f"partition {HOLE_PARTITION} of {cfg.topics.raw}: offsets {FIRST}-{LAST} ({missing} records)" \
            in body["problems"]["consumer"]
        assert metrics.registry.get_sample_value("pipeline_kafka_offset_gap_missing",
                                                 {"partition": str(HOLE_PARTITION)}) == missing

        # Commits go on for the other partition; the one with the hole never gets past its first offset.
        wait_for(lambda: committed_offsets(cfg.consumer_group, cfg.topics.raw).get(1) == PER_PARTITION, 20,
                 what="partition 1 committed to its end")
        for _ in range(10):
            assert committed_offsets(cfg.consumer_group, cfg.topics.raw).get(HOLE_PARTITION, 0) <= FIRST
            time.sleep(0.3)
        assert stored(env) == sent - missing  # the rest was stored, once
        assert consumer.withheld and min(consumer.withheld) == FIRST
    # Shutdown commits what the sinks hold: still not past the hole.
    assert committed_offsets(cfg.consumer_group, cfg.topics.raw).get(HOLE_PARTITION, 0) <= FIRST
