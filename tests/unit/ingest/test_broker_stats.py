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


COUNTER = "$SYS/broker/publish/messages/dropped"


def test_without_a_counter_the_brokers_recent_drop_rate_counts_once_as_estimated_growth():
    # Mosquitto let the counter's retained copy expire (60 s after its last change): only the 15-minute average
    # of drops per minute arrives, republished as it decays.
    t = DropTracker(rate_window_s=900)
    assert t.estimate(1.0) == 0 and t.take() is None  # nothing seen yet
    t.observe_rate(32.33, 1.0)  # 15 x 32.33: about 485 drops in the last quarter hour
    assert t.estimate(1.0) == 485 and t.take() == 485
    t.observe_rate(31.5, 11.0)  # decaying: nothing new
    assert t.estimate(11.0) == 0 and t.take() == 0
    t.observe_rate(40.0, 21.0)  # new drops: only what exceeds the estimate counts
    assert t.estimate(21.0) == 600 - 485 and t.take() == 115
    s = t.status()
    assert s["counter_received"] is False and s["dropped_total"] is None and s["estimated"] is True
    assert s["seen_since_start"] == 600 and s["recent_estimate"] == 600 and s["last_growth_at"] == 21.0


def test_a_first_counter_value_without_a_previous_one_counts_at_most_the_recent_drops():
    # The counter arrives (retained, within a minute of the drops) but no earlier value is known to grow from:
    # the broker's count since it started is not all new, the drops of the rate's window are.
    t = DropTracker(rate_window_s=900)
    t.observe_rate(20.0, 1.0)  # about 300 recent drops
    assert t.observe(COUNTER, 5300, 1.0) == 300
    assert t.estimate(2.0) == 0 and t.take() == 300
    assert t.observe(COUNTER, 5310, 3.0) == 10  # from now on the counter rules
    quiet = DropTracker(rate_window_s=900)
    quiet.observe_rate(0.0, 1.0)
    assert quiet.observe(COUNTER, 5300, 1.0) == 0  # old drops only: a baseline


def test_a_counter_after_an_estimate_counts_only_what_the_estimate_did_not():
    t = DropTracker(baseline={COUNTER: 1000}, rate_window_s=900)
    t.observe_rate(20.0, 1.0)
    assert t.estimate(1.0) == 300 and t.take() == 300
    assert t.observe(COUNTER, 1350, 5.0) == 50  # 350 since the previous run's last value, 300 already counted
    assert t.status()["seen_since_start"] == 350 and t.status()["estimated"] is False


def test_rate_payloads_parse_as_floats():
    from pipeline.ingest.broker_stats import parse_number
    assert parse_number(b"31.55") == 31.55 and parse_number(b"-1") is None and parse_number(b"x") is None
