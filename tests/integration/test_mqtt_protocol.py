"""MQTT 5 by default: a burst from one client gets through a Mosquitto with its stock limits, and a broker that
speaks only 3.1.1 is spoken to in 3.1.1, with a log line saying so."""
from __future__ import annotations

import json
import logging
import shutil
import socket
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.integration.clients import DaemonProcess, RunningPipeline, wait_for
from tests.integration.services import ServiceProcess, free_port, kafka_broker

BURST = 3000


def stock_mosquitto(workdir) -> ServiceProcess:
    """Mosquitto as Debian ships it: only a listener, so max_inflight_messages 20 and max_queued_messages 1000."""
    port = free_port()
    conf = workdir / "stock.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    return ServiceProcess("mosquitto", [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)], port,
                          workdir)


def burst(port: int, root: str, n: int) -> float:
    """Publish `n` QoS 1 readings from one client as fast as paho goes (no window); seconds until all acknowledged."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"burst-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    t0 = time.time() - 3600
    started = time.monotonic()
    try:
        infos = [client.publish(f"{root}/burst-{i % 10}",
                                json.dumps({"metric": "temperature", "value": i, "timestamp": t0 + i * 0.01}), qos=1)
                 for i in range(n)]
        for info in infos:
            info.wait_for_publish(60)
        return time.monotonic() - started
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast_path", "plain"])
def test_a_burst_from_one_client_through_a_stock_mosquitto_is_stored_whole(env, tmp_path, fast_path):
    # MQTT 3.1.1 left Mosquitto's window of 20 unacknowledged messages in charge: 20 in flight plus 1000 queued,
    # the rest of a fast burst dropped (1,020 and 1,041 of 3,000 stored when measured). MQTT 5 asks for more.
    broker = stock_mosquitto(tmp_path).start()
    extra = {"mqtt": {"host": "127.0.0.1", "port": broker.port, "fast_path": fast_path}}
    daemon = DaemonProcess(env.write_config(tmp_path / "config.yaml", **extra), tmp_path / "daemon.log")
    try:
        env.migrate(env.settings(**extra))
        daemon.start()
        assert daemon.logged("protocol=5"), daemon.log_tail()
        seconds = burst(broker.port, env.root, BURST)
        count = lambda: env.query("SELECT count(*), count(DISTINCT value) FROM measurements")[0]  # noqa: E731
        wait_for(lambda: count()[0] >= BURST, 60, what=f"{BURST} rows")
        time.sleep(1.0)
        print(f"burst of {BURST} published in {seconds:.2f} s, stored {count()}")
        assert count() == (BURST, BURST)
        assert "dropped" not in (tmp_path / "mosquitto.log").read_text()
    finally:
        daemon.stop()
        broker.stop()


# -- a broker that speaks only MQTT 3.1.1 -------------------------------------------------------------------------

def _read_packet(conn: socket.socket) -> tuple[int, bytes]:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    head = exactly(1)[0]
    length, shift = 0, 0
    while True:
        byte = exactly(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            break
    return head, exactly(length)


class ScriptedBroker:
    """A scripted MQTT broker that refuses a CONNECT of any protocol level but `level` (CONNACK code 1, as a
    3.1.1 broker answers version 5), grants the subscription, sends one QoS 1 PUBLISH (once `release` is set) and
    records the acknowledgements."""

    def __init__(self, topic: str, payload: bytes, level: int = 4):
        self.topic, self.payload, self.level = topic.encode(), payload, level
        self.release = threading.Event()
        self.release.set()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.levels: list[int] = []  # protocol level of each CONNECT: 4 is 3.1.1, 5 is MQTT 5
        self.connect_flags: list[int] = []
        self.pubacks: list[int] = []
        self._closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        with conn:
            try:
                cmd, body = _read_packet(conn)
                assert cmd == 0x10, cmd
                name_len = int.from_bytes(body[:2], "big")
                level, flags = body[2 + name_len], body[3 + name_len]
                self.levels.append(level)
                self.connect_flags.append(flags)
                if level != self.level:
                    conn.sendall(b"\x20\x02\x00\x01")  # connection refused: unacceptable protocol version
                    return
                v5 = level == 5
                conn.sendall(b"\x20\x03\x00\x00\x00" if v5 else b"\x20\x02\x00\x00")
                while True:
                    cmd, body = _read_packet(conn)
                    if cmd == 0x82:  # SUBSCRIBE: grant QoS 1, then one message
                        conn.sendall(b"\x90\x04" + body[:2] + b"\x00\x01" if v5 else b"\x90\x03" + body[:2] + b"\x01")
                        self.release.wait(60)
                        var = len(self.topic).to_bytes(2, "big") + self.topic + (7).to_bytes(2, "big")
                        rest = var + (b"\x00" if v5 else b"") + self.payload  # v5: no properties
                        conn.sendall(bytes([0x32, len(rest)]) + rest)
                    elif cmd == 0x40:
                        self.pubacks.append(int.from_bytes(body[:2], "big"))
                    elif cmd == 0xC0:
                        conn.sendall(b"\xd0\x00")
                    elif cmd == 0xE0:
                        return
            except (ConnectionError, OSError):
                return

    def close(self) -> None:
        self._closed = True
        self.server.close()


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast_path", "plain"])
def test_a_broker_that_refuses_mqtt5_is_spoken_to_in_3_1_1_and_it_is_logged(env, caplog, fast_path):
    reading = json.dumps({"metric": "temperature", "value": 21.5, "timestamp": time.time() - 10}).encode()
    broker = ScriptedBroker(f"{env.root}/dev-311", reading)
    settings = env.migrate(env.settings(mqtt={"host": "127.0.0.1", "port": broker.port, "fast_path": fast_path}))
    assert settings.config.mqtt.protocol == "5"  # the default
    caplog.set_level(logging.INFO, logger="pipeline.ingest.mqtt_bridge")
    try:
        with RunningPipeline(settings, env.metrics()) as pipeline:
            wait_for(lambda: env.query("SELECT sensor_id, value FROM measurements"), 30, what="the reading stored")
            # Acknowledged to the broker once Kafka had it, as with MQTT 5.
            wait_for(lambda: broker.pubacks == [7], 10, what="the PUBACK")
            assert pipeline.bridge.protocol == "3.1.1" and pipeline.bridge.is_connected()
    finally:
        broker.close()
    assert broker.levels == [5, 4]  # tried 5 once, then 3.1.1 only
    assert broker.connect_flags[1] & 0x02 == 0  # clean session false: the persistent session, as configured
    assert env.query("SELECT sensor_id, value FROM measurements") == [("dev-311", 21.5)]
    fallback = [r.getMessage() for r in caplog.records if "event=mqtt_protocol_fallback" in r.getMessage()]
    assert len(fallback) == 1 and "from=5 to=3.1.1" in fallback[0] and f"port={broker.port}" in fallback[0]
    assert any("event=mqtt_connected" in r.getMessage() and "protocol=3.1.1" in r.getMessage() for r in caplog.records)


@pytest.mark.faults  # freezes a Kafka broker of its own
@pytest.mark.parametrize("fast_path", [True, False], ids=["fast_path", "plain"])
def test_with_mqtt5_a_message_is_acknowledged_only_once_kafka_has_it(env, tmp_path, fast_path):
    reading = json.dumps({"metric": "temperature", "value": 5.5, "timestamp": time.time() - 10}).encode()
    broker = ScriptedBroker(f"{env.root}/dev-5", reading, level=5)
    broker.release.clear()
    kafka = kafka_broker(tmp_path).start()
    extra = {"mqtt": {"host": "127.0.0.1", "port": broker.port, "fast_path": fast_path},
             "kafka": {"bootstrap_servers": f"127.0.0.1:{kafka.port}"}}
    env.migrate(env.settings(**extra))
    daemon = DaemonProcess(env.write_config(tmp_path / "config.yaml", **extra), tmp_path / "daemon.log")
    try:
        daemon.start()
        assert daemon.logged("protocol=5") and broker.levels == [5], daemon.log_tail()
        kafka.freeze()
        try:
            broker.release.set()  # the message arrives while Kafka cannot take it
            time.sleep(4)
            assert broker.pubacks == []  # not acknowledged: the broker would resend it after a crash
        finally:
            kafka.thaw()
        wait_for(lambda: broker.pubacks == [7], 60, what="the PUBACK once Kafka confirmed")
        wait_for(lambda: env.query("SELECT sensor_id, value FROM measurements"), 30, what="the reading stored")
    finally:
        daemon.stop()
        broker.close()
        kafka.stop()
    assert env.query("SELECT sensor_id, value FROM measurements") == [("dev-5", 5.5)]
