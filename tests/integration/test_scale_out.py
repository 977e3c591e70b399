"""Two daemons share the work (MQTT shared subscription + one Kafka consumer group); one is killed with -9
mid-stream and restarted: every reading is stored once, window rows equal what one instance computes from
the same readings, and no alert is duplicated."""
from __future__ import annotations

import re

import pytest
import yaml

from tests.integration.clients import DaemonProcess, SteadyPublisher, wait_for

SENSORS = 8
# While an instance is down, Mosquitto keeps handing its share of the shared subscription to its (persistent)
# session, up to max_queued_messages (1000 by default, then it DROPS; deploy/mosquitto.conf raises it). The
# rate keeps the dead instance's share for the ~10 s until the other one takes over below that limit.
TOTAL = 2400
RATE = 150.0  # per second: 16 s of publishing


def assigned(log_path, offset: int = 0) -> list[set[int]]:
    """Every assignment an instance logged after `offset` bytes of its log."""
    with open(log_path, "rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    return [set(map(int, m.split(","))) if m else set() for m in re.findall(r"event=partitions_assigned partitions=([0-9,]*)", text)]


@pytest.mark.faults  # kill -9 of one of two daemons, about 30 s
def test_two_instances_kill_9_one_every_reading_once_same_windows_no_duplicate_alert(env, tmp_path):
    extra = dict(mqtt={"shared_group": f"g{env.run_id}"},
                 aggregation={"periods": ["1s"], "grace_s": 1, "max_lateness_s": 3600, "idle_close_s": 3},
                 detection={"offline_after_s": 0},
                 processing={"interval_s": 0.5}, retention={"enabled": False}, reload={"watch_interval_s": 0})
    env.migrate(env.settings(**extra))
    configs = {}
    for name in ("a", "b"):
        tree = env.tree(instance_id=f"{name}-{env.run_id}", **extra)
        tree["detection"]["metrics"] = {}  # thresholds only (41+ warning, 61+ critical): no rate or outlier alerts
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(yaml.safe_dump(tree))
    logs = {name: tmp_path / f"{name}.log" for name in configs}
    a = DaemonProcess(configs["a"], logs["a"]).start()
    b = DaemonProcess(configs["b"], logs["b"]).start()
    pub = None
    try:
        # Both in the group: the four partitions split between them.
        wait_for(lambda: assigned(logs["a"]) and assigned(logs["b"]) and assigned(logs["a"])[-1]
                 and assigned(logs["b"])[-1] and assigned(logs["a"])[-1] | assigned(logs["b"])[-1] == {0, 1, 2, 3},
                 timeout=30, what="partitions split between the two instances")
        pub = SteadyPublisher(env.root, TOTAL, RATE, sensors=SENSORS)
        pub.start()
        wait_for(lambda: pub.published >= TOTAL // 4, timeout=20, what="a quarter published")
        mark = logs["b"].stat().st_size
        a.kill()
        # b takes over every partition (after the session timeout), state of a's sensors rebuilt from the database.
        wait_for(lambda: any(p == {0, 1, 2, 3} for p in assigned(logs["b"], mark)), timeout=25,
                 what="b owns every partition")
        # a comes back under the same client id: the QoS 1 messages its MQTT session held are delivered to it.
        a = DaemonProcess(configs["a"], logs["a"]).start()
        pub.finish()
        wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] >= TOTAL, timeout=40,
                 what=f"{TOTAL} readings stored")
        # Windows close by the idle timeout once the stream ends; then nothing is pending.
        wait_for(lambda: env.query("SELECT count(*) FROM aggregation_pending")[0][0] == 0, timeout=30,
                 what="every window closed")
    finally:
        if pub is not None and pub.is_alive():
            pub.join(30)
        for d in (a, b):
            d.stop()

    # Every reading stored exactly once (value = sequence number, unique per reading).
    assert env.query("SELECT count(*), count(DISTINCT value), min(value), max(value) FROM measurements")[0] == (
        TOTAL, TOTAL, 0, TOTAL - 1)
    # Window rows equal those a single instance computes: the same aggregates straight from the readings.
    expected = env.query(
        "SELECT sensor_id, metric, '1s', date_trunc('second', timestamp) AS w, count(*), min(value), max(value), "
        "round(avg(value)::numeric, 6) FROM measurements GROUP BY 1, 2, 4 ORDER BY 1, 2, 4")
    actual = env.query("SELECT sensor_id, metric, period, timestamp, count, min_value, max_value, "
                       "round(avg_value::numeric, 6) FROM aggregations ORDER BY 1, 2, 4")
    assert actual == expected and len(actual) >= SENSORS
    # One threshold alert per sensor, opened once (then escalated in place), never a second row or opening.
    alerts = env.query("SELECT sensor_id, metric, type, severity, count(*) OVER (PARTITION BY sensor_id, metric, type) "
                       "FROM alerts ORDER BY sensor_id")
    assert [(s, m, t, sev, n) for s, m, t, sev, n in alerts] == [
        (f"dev-{i}", "temperature", "threshold", "critical", 1) for i in range(SENSORS)]
    openings = env.query("SELECT alert_id, count(*) FROM alert_events WHERE event = 'opened' GROUP BY alert_id")
    assert len(openings) == SENSORS and all(n == 1 for _, n in openings)


def test_sensor_partition_matches_the_producer(env):
    """Open alerts are loaded on assignment by CRC32(sensor id) % partitions: check it is librdkafka's choice."""
    from confluent_kafka import Producer

    from pipeline.clients.kafka import ensure_topics, producer_conf
    from pipeline.runtime.ownership import sensor_partition

    cfg = env.settings().config.kafka
    ensure_topics(cfg, [cfg.topics.raw])
    producer = Producer(producer_conf(cfg, f"crc-{env.run_id}"))
    got: dict[str, int] = {}
    for i in range(40):
        sensor = f"sensor-{i}"
        producer.produce(cfg.topics.raw, b"{}", key=sensor.encode(),
                         on_delivery=lambda err, msg, s=sensor: got.__setitem__(s, msg.partition()))
    assert producer.flush(20) == 0
    assert got == {s: sensor_partition(s, cfg.partitions) for s in got} and len(set(got.values())) == cfg.partitions
