"""mqtt.max_packet_bytes against the real Mosquitto on 1883: on the fast path a message over the limit becomes a dead
letter (topic and size, no payload) without the daemon ever holding it, with MQTT 3.1.1 and 5 alike; on the plain
path with MQTT 5 the broker is told the limit and drops it for us. The message after it is stored either way."""
from __future__ import annotations

import json
import time

import pytest

from tests.integration.clients import DaemonProcess, Publisher, RunningPipeline, messages_in, read_topic, wait_for

BIG = 8 * 1024 * 1024
MIB = 1024 * 1024


def status_kib(pid: int, field: str) -> int:
    """VmRSS (resident now) or VmHWM (the peak since the last reset) of a process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def reading(value: float) -> bytes:
    return json.dumps({"metric": "temperature", "value": value, "timestamp": time.time() - 5}).encode()


def stored(env) -> list[tuple]:
    return env.query("SELECT sensor_id, value FROM measurements ORDER BY value")


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_a_message_over_the_packet_limit_is_dead_lettered_unread_and_the_next_one_stored(env, tmp_path, protocol):
    settings = env.migrate(env.settings(mqtt={"protocol": protocol}))
    limit = settings.config.mqtt.max_packet_bytes
    assert BIG > 4 * limit
    daemon = DaemonProcess(env.write_config(tmp_path / "config.yaml", mqtt={"protocol": protocol}),
                           tmp_path / "daemon.log").start()
    pub = Publisher()
    try:
        pub.publish_all([(f"{env.root}/dev-1", reading(1))])  # warm: every stage has handled a message
        wait_for(lambda: len(stored(env)) == 1, 30, what="the first reading")
        pid = daemon.proc.pid
        rss_before = status_kib(pid, "VmRSS")
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # VmHWM restarts from the current RSS: the peak from here on is what we read below
        pub.publish_all([(f"{env.root}/dev-big", b"{" + b"7" * (BIG - 2) + b"}"), (f"{env.root}/dev-1", reading(2))], timeout=60)
        wait_for(lambda: len(stored(env)) == 2, 30, what="the reading after the large message")
        [letter] = read_topic(settings.config.kafka.topics.dead_letter, expected=1, timeout=30)
        peak = status_kib(pid, "VmHWM")
        assert daemon.proc.poll() is None, daemon.log_tail()
    finally:
        pub.close()
        daemon.stop()
    growth = (peak - rss_before) * 1024
    print(f"daemon RSS before {rss_before / 1024:.1f} MiB, peak while receiving an {BIG // MIB} MiB message "
          f"{peak / 1024:.1f} MiB (+{growth / MIB:.2f} MiB)")
    # Gathered whole, the peak would rise by at least the message (8 MiB; twice that while made into bytes).
    assert growth < BIG / 4, f"peak RSS grew by {growth / MIB:.1f} MiB"
    h = {k: v.decode() for k, v in letter.headers()}
    assert (h["reason"], h["mqtt_topic"], h["stage"]) == ("payload_too_large", f"{env.root}/dev-big", "decode")
    assert f"{BIG} bytes" in h["error"], h["error"]
    assert letter.value() in (b"", None)  # the payload was never read
    assert stored(env) == [("dev-1", 1.0), ("dev-1", 2.0)]


def test_mqtt5_plain_path_the_broker_honours_the_maximum_packet_size_the_daemon_asks_for(env):
    settings = env.migrate(env.settings(mqtt={"fast_path": False}))
    assert settings.config.mqtt.protocol == "5"  # the default
    metrics = env.metrics()
    with RunningPipeline(settings, metrics) as pipeline:
        pub = Publisher()
        try:
            pub.publish_all([(f"{env.root}/dev-big", b"{" + b"7" * (BIG - 2) + b"}"), (f"{env.root}/dev-1", reading(2))], timeout=60)
        finally:
            pub.close()
        wait_for(lambda: len(stored(env)) == 1, 30, what="the reading after the large message")
        time.sleep(1.0)  # a dead letter for the large one, had it come through, is written by now (flush 200 ms)
        assert pipeline.healthy()
    # The broker never sent it: not received, so no dead letter (the client-side limit would have made one).
    assert metrics.registry.get_sample_value("pipeline_mqtt_messages_received_total") == 1
    assert messages_in(settings.config.kafka.topics.dead_letter) == 0
    assert stored(env) == [("dev-1", 2.0)]
