"""The pure parts of watching the broker's drops: the counter, its growth (resets included), the reports."""
from __future__ import annotations

import pytest

from pipeline.config import MqttConfig
from pipeline.ingest.broker_stats import DropTracker, growth, parse_counter, sensor_id


@pytest.mark.parametrize("payload, expected", [(b"0", 0), (b"12", 12), (b" 12\n", 12), (b"12.0", 12), (b"", None),
                                               (b"abc", None), (b"-3", None), (b"nan", None), (b"inf", None),
                                               (b"\xff", None)])
def test_parse_counter(payload, expected):
    assert parse_counter(payload) == expected


def test_growth_first_value_is_a_baseline_and_a_reset_counts_from_zero():
    assert growth(None, 5000) == 0
    assert growth(5000, 5000) == 0
    assert growth(5000, 5090) == 90
    assert growth(5090, 7) == 7  # the broker restarted: its counter starts over


def test_tracker_reports_growth_per_interval_and_nothing_before_a_counter_arrived():
    t = DropTracker()
    assert t.take() is None  # a broker without $SYS counters: no readings at all
    assert t.observe("$SYS/broker/publish/messages/dropped", 40, now=1.0) == 0
    assert t.take() == 0
    t.observe("$SYS/broker/publish/messages/dropped", 130, now=2.0)
    t.observe("$SYS/broker/publish/messages/dropped", 150, now=3.0)
    assert t.take() == 110 and t.take() == 0
    s = t.status()
    assert s["dropped_total"] == 150 and s["seen_since_start"] == 110 and s["last_growth_at"] == 3.0


def test_reserved_sensor_id_is_valid():
    assert sensor_id("localhost") == "broker:localhost"
    assert sensor_id("mqtt broker/1") == "broker:mqtt-broker-1"
    assert len(sensor_id("h" * 80)) == 50


def test_config_defaults_watch_mosquittos_counter():
    cfg = MqttConfig()
    assert cfg.broker_stats.enabled and cfg.broker_stats.topics == ("$SYS/broker/publish/messages/dropped",)


def test_drops_while_the_daemon_was_down_grow_from_the_previous_runs_last_value():
    tracker = DropTracker(baseline={"$SYS/broker/publish/messages/dropped": 40})
    assert tracker.observe("$SYS/broker/publish/messages/dropped", 1540, 1.0) == 1500  # dropped during the restart
    assert tracker.take() == 1500
    restarted = DropTracker(baseline={"$SYS/broker/publish/messages/dropped": 1540})
    assert restarted.observe("$SYS/broker/publish/messages/dropped", 7, 2.0) == 7  # the broker restarted too


def test_the_counter_memory_round_trips_and_a_redis_failure_is_no_baseline():
    from pipeline.ingest.broker_stats import CounterMemory

    class FakeRedis(dict):
        def hgetall(self, key):
            return {k.encode(): str(v).encode() for k, v in self.get(key, {}).items()}

        def hset(self, key, field, value):
            self.setdefault(key, {})[field] = value

    class Down:
        def hgetall(self, key):
            raise ConnectionError("refused")

        hset = hgetall

    memory = CounterMemory(FakeRedis(), "broker_stats:broker:h")
    memory.save("$SYS/broker/publish/messages/dropped", 12)
    assert memory.load() == {"$SYS/broker/publish/messages/dropped": 12}
    assert CounterMemory(Down(), "k").load() == {}
    CounterMemory(Down(), "k").save("t", 1)  # never raises
