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

        def hget(self, key, field):
            value = self.get(key, {}).get(field)
            return None if value is None else str(value).encode()

        def hset(self, key, field, value):
            self.setdefault(key, {})[field] = value

    class Down:
        def hgetall(self, key):
            raise ConnectionError("refused")

        hset = hget = hgetall

    memory = CounterMemory(FakeRedis(), "broker_stats:broker:h")
    assert memory.load_rate() is None  # no earlier run
    memory.save("$SYS/broker/publish/messages/dropped", 12)
    memory.save_rate(55.53, 1733570000.25)
    assert memory.load() == {"$SYS/broker/publish/messages/dropped": 12}  # the rate is not a counter
    assert memory.load_rate() == (55.53, 1733570000.25)
    assert CounterMemory(Down(), "k").load() == {} and CounterMemory(Down(), "k").load_rate() is None
    CounterMemory(Down(), "k").save("t", 1)  # never raises
    CounterMemory(Down(), "k").save_rate(1.0, 2.0)


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


def decayed(per_min: float, seconds: float, window: float = 900.0) -> float:
    """The broker's average `seconds` later without new drops (Mosquitto: exp(-elapsed / window) per update)."""
    import math
    return round(per_min * math.exp(-seconds / window), 2)


def test_drops_an_earlier_run_counted_are_not_estimated_again_after_a_restart():
    # The earlier run counted 833 drops; the broker's average then was 55.53 per minute (x 15 = 833). The daemon
    # comes back 100 s later, the counter's retained copy gone: only the decaying average arrives.
    earlier = (55.53, 1000.0)
    t = DropTracker(baseline={COUNTER: 5833}, rate_window_s=900, previous_rate=earlier)
    t.observe_rate(decayed(55.53, 95), 1100.0, live=False)  # the retained copy, of unknown age: wait
    assert t.estimate(1100.0) == 0 and t.take() == 0
    t.observe_rate(decayed(55.53, 105), 1105.0)  # published now: still only the old drops, decayed
    assert t.estimate(1105.0) == 0 and t.take() == 0
    assert t.status()["seen_since_start"] == 0
    # The same restart without the earlier run's value counts them again (what happened before this was kept).
    forgetful = DropTracker(baseline={COUNTER: 5833}, rate_window_s=900)
    forgetful.observe_rate(decayed(55.53, 105), 1105.0)
    assert forgetful.estimate(1105.0) == 741  # 15 x 49.41


def test_after_a_restart_only_drops_beyond_what_an_earlier_run_counted_are_estimated():
    t = DropTracker(baseline={COUNTER: 5833}, rate_window_s=900, previous_rate=(55.53, 1000.0))
    # 200 drops while the daemon was down, 60 s before this value (the average holds them decayed a little).
    t.observe_rate(round(decayed(55.53, 105) + 200 / 15 * decayed(1.0, 60), 2), 1105.0)
    assert t.estimate(1105.0) == 188 and t.take() == 188  # 15 x (61.94 - 49.41): 200 decayed to 0.94
    assert t.status()["estimated"] is True
    assert t.observe(COUNTER, 5833 + 200, 1110.0) == 12  # the counter: exact from the earlier run's last value


def test_a_broker_restart_since_the_earlier_run_estimates_nothing_negative():
    t = DropTracker(rate_window_s=900, previous_rate=(55.53, 1000.0))
    t.observe_rate(0.0, 1105.0)  # a new broker: its average starts from 0
    assert t.estimate(1105.0) == 0 and t.take() == 0


def test_the_drop_counters_of_named_topics_are_exported_at_zero_before_any_drop():
    """A series born at N shows no increase: the first drops would escape the PipelineBrokerDrops rule."""
    import msgspec
    from prometheus_client import CollectorRegistry

    from pipeline.config import Secret
    from pipeline.ingest.broker_stats import BrokerStats
    from pipeline.observability.metrics import Metrics

    base = MqttConfig()
    topics = ("$SYS/broker/publish/messages/dropped", "$SYS/brokers/+/metrics/messages/dropped")
    cfg = msgspec.structs.replace(base, broker_stats=msgspec.structs.replace(base.broker_stats, topics=topics))
    metrics = Metrics(CollectorRegistry())
    BrokerStats(cfg, Secret(""), metrics, inject=lambda readings: None)
    seen = "pipeline_mqtt_broker_drops_seen_total"
    assert metrics.registry.get_sample_value(seen, {"topic": topics[0]}) == 0
    assert metrics.registry.get_sample_value(seen, {"topic": base.broker_stats.recent_rate_topic}) == 0
    assert metrics.registry.get_sample_value(seen, {"topic": topics[1]}) is None  # a filter, not a topic


class RememberedCounters:
    """A CounterMemory as the next start would read it."""

    def __init__(self, baseline: dict):
        self.counters, self.rate = dict(baseline), None

    def load(self):
        return dict(self.counters)

    def load_rate(self):
        return self.rate

    def save(self, topic, value):
        self.counters[topic] = value

    def save_rate(self, per_min, at):
        self.rate = (per_min, at)


@pytest.mark.parametrize("stored", [True, False])
def test_drops_become_the_next_starts_baseline_only_once_their_reading_is_stored(stored):
    """A daemon killed between seeing drops and every sink storing their reading (the alert sink held up behind a
    backlog or a refusing PostgreSQL) must count them again when it starts: with the baseline saved on receipt,
    the restarted daemon saw no growth and the drop alert never opened."""
    import threading
    import time
    from types import SimpleNamespace

    import msgspec
    from prometheus_client import CollectorRegistry

    from pipeline.config import Secret
    from pipeline.ingest.broker_stats import BrokerStats
    from pipeline.observability.metrics import Metrics
    from pipeline.runtime.batch import Batch

    base = MqttConfig()
    cfg = msgspec.structs.replace(base, broker_stats=msgspec.structs.replace(base.broker_stats, report_interval_s=0.05))
    memory = RememberedCounters({COUNTER: 100})
    batches: list[Batch] = []

    def inject(readings):
        batches.append(Batch(readings, [], {}, 1))  # one durable sink, which has not stored it yet
        return batches[-1]

    stats = BrokerStats(cfg, Secret(""), Metrics(CollectorRegistry()), inject, memory=memory)
    stats.link.start = lambda: None  # no network: the broker's messages are handed in below
    stats.link.connected.set()
    stats._on_message(None, None, SimpleNamespace(topic=COUNTER, payload=b"1600", retain=False))
    stop = threading.Event()
    loop = threading.Thread(target=stats.run, args=(stop,))
    loop.start()
    try:
        deadline = time.monotonic() + 5
        while not batches and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batches and batches[0].readings[0].value == 1500.0
        time.sleep(0.2)  # several intervals: the loop waits for the sink, it does not report again
        assert len(batches) == 1 and memory.load() == {COUNTER: 100}
        if stored:
            batches[0].sink_done()
            while memory.load() != {COUNTER: 1600} and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        stop.set()  # the "crash": stopping before the sink stored the reading
        loop.join(5)
    assert not loop.is_alive()
    restarted = DropTracker(memory.load())
    if stored:
        assert memory.load() == {COUNTER: 1600}
        assert restarted.observe(COUNTER, 1600, 9.0) == 0  # reported once, not again
    else:
        assert memory.load() == {COUNTER: 100}
        assert restarted.observe(COUNTER, 1600, 9.0) == 1500  # the next start reports them (at least once)
