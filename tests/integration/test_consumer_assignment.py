"""Consumer assignment that cannot wait in vain silently: single-instance mode takes every partition itself
and keeps a second daemon away; group mode reports a consumer that gets no partitions while messages wait."""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from tests.integration.clients import DaemonProcess, Publisher, RunningPipeline, wait_for

ROOT_DIR = Path(__file__).resolve().parents[2]


def test_a_second_single_instance_daemon_on_the_same_group_exits_2_naming_the_first(env, tmp_path):
    env.migrate()
    first = DaemonProcess(env.write_config(tmp_path / "a.yaml", instance_id=f"first-{env.run_id}"),
                          tmp_path / "a.log").start()
    try:
        second = subprocess.run([sys.executable, str(ROOT_DIR / "realtime_pipeline.py"), "--config",
                                 str(env.write_config(tmp_path / "b.yaml", instance_id=f"second-{env.run_id}",
                                                      mqtt={"client_id": f"rp-second-{env.run_id}"}))],
                                capture_output=True, text=True, timeout=60, cwd=ROOT_DIR)
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"instance 'first-{env.run_id}'" in second.stderr and "mqtt.shared_group" in second.stderr
        assert first.proc.poll() is None  # the first one goes on
    finally:
        first.stop()


class StuckMember(threading.Thread):
    """A consumer group member that takes every partition, then stops polling: the group's next rebalance
    waits for it (up to its max.poll.interval.ms) and assigns nobody meanwhile. From the outside that is a
    group that never assigns partitions (as a wedged one), reproduced on any broker."""

    def __init__(self, group: str, topic: str):
        super().__init__(daemon=True)
        self.consumer = Consumer({"bootstrap.servers": "127.0.0.1:9092", "group.id": group,
                                  "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
                                  "max.poll.interval.ms": 90000,
                                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        self.assigned = threading.Event()
        self.stop = threading.Event()
        self.consumer.subscribe([topic], on_assign=lambda c, ps: self.assigned.set())

    def run(self):
        while not self.assigned.is_set() and not self.stop.is_set():
            self.consumer.poll(0.2)
        self.stop.wait()  # holds its membership without polling: a rebalance cannot complete
        self.consumer.close()


@pytest.mark.faults  # waits out the group's assignment timeout: about 40 s
def test_group_mode_reports_a_consumer_that_waits_in_vain_and_single_mode_is_unaffected(env):
    settings = env.migrate(env.settings(kafka={"assignment": "group", "assignment_timeout_s": 4}))
    raw = settings.config.kafka.topics.raw
    from pipeline.clients.kafka import ensure_topics

    ensure_topics(settings.config.kafka, [raw])
    holder = StuckMember(settings.config.kafka.consumer_group, raw)
    holder.start()
    try:
        wait_for(holder.assigned.is_set, 45, what="the idle member's assignment")
        metrics = env.metrics()
        pub = Publisher()
        p = RunningPipeline(settings, metrics).pipeline
        p.start()
        try:
            wait_for(lambda: p.bridge.subscribed.is_set(), 20, what="MQTT subscription")
            pub.publish_all([(f"{env.root}/w-1/temperature", "21.5")])
            wait_for(lambda: not p.source.status()[0], 40, what="the watchdog's verdict")
            ok, detail = p.source.status()
            assert "no partitions" in detail and settings.config.kafka.consumer_group in detail
            assert metrics.registry.get_sample_value("pipeline_kafka_consumer_stalled") == 1
            assert env.query("SELECT count(*) FROM measurements")[0][0] == 0
        finally:
            p.stop()
        # The same group id in single-instance mode: consumes at once, whatever the group's state.
        single = env.settings(kafka={"assignment": "single"})
        with RunningPipeline(single, env.metrics()) as q:
            assert q.source.status()[0]
            wait_for(lambda: env.query("SELECT count(*) FROM measurements WHERE sensor_id = 'w-1'")[0][0] == 1, 30,
                     what="the waiting reading stored by the single-instance daemon")
        pub.close()
    finally:
        holder.stop.set()
        holder.join(15)
