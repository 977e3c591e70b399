"""Small real clients for tests: an MQTT publisher, a dead-letter reader, a pipeline runner."""
from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as mqtt
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient
from paho.mqtt.enums import CallbackAPIVersion

import pytest

from pipeline.app.daemon import Pipeline


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):
    """Poll until predicate() is truthy; returns its value or fails the test naming what it waited for."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last value: {value!r})")
        time.sleep(interval)


class Publisher:
    """A paho client that publishes and waits for each QoS 1 acknowledgement."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883):
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
        self.client.max_inflight_messages_set(1000)
        self.client.connect(host, port)
        self.client.loop_start()

    def publish(self, topic: str, payload, qos: int = 1, retain: bool = False):
        if isinstance(payload, str):
            payload = payload.encode("utf-8", "surrogateescape")
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def publish_all(self, items, qos: int = 1, timeout: float = 30.0) -> None:
        infos = [self.publish(t, p, qos) for t, p in items]
        for info in infos:
            info.wait_for_publish(timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def read_topic(topic: str, expected: int, timeout: float = 20.0) -> list:
    """All messages of a Kafka topic from the start, waiting until `expected` have arrived."""
    consumer = Consumer({"bootstrap.servers": "127.0.0.1:9092", "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
    consumer.subscribe([topic])
    got: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for m in consumer.consume(100, 0.5):
                if m.error() is None:
                    got.append(m)
    finally:
        consumer.close()
    return got


def messages_in(topic: str, bootstrap: str = "127.0.0.1:9092") -> int:
    """How many messages the topic holds (high minus low watermark over its partitions): once the writer has
    flushed, "nothing else was sent" is this count, not a read that waits out a timeout."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex[:8]}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def committed_offsets(group: str, topic: str, bootstrap: str = "127.0.0.1:9092") -> dict[int, int]:
    """The consumer group's committed offsets on `topic`, partition -> next offset to read (partitions without a
    commit are left out)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    [future] = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)]).values()
    return {tp.partition: tp.offset for tp in future.result(10).topic_partitions
            if tp.topic == topic and tp.offset >= 0}


def wait_committed(group: str, topic: str, total: int, timeout: float = 20.0) -> dict[int, int]:
    """Poll until the group's committed offsets on `topic` add up to at least `total` messages (a new topic's
    offsets start at 0): everything consumed so far is committed, so a restart will not read it again."""
    return wait_for(lambda: (lambda c: c if sum(c.values()) >= total else None)(committed_offsets(group, topic)),
                    timeout, interval=0.2, what=f"group {group} to commit {total} messages of {topic}")


class RunningPipeline:
    """A Pipeline in this process, started and ready (partitions assigned, MQTT subscribed)."""

    def __init__(self, settings, metrics):
        self.pipeline = Pipeline(settings, metrics)
        self.stop_event = threading.Event()
        self.exit_code: int | None = None
        self.thread: threading.Thread | None = None

    def __enter__(self) -> Pipeline:
        p = self.pipeline
        p.start()
        wait_for(lambda: p.source.assigned and p.bridge.subscribed.is_set(), 30, what="partition assignment and MQTT subscription")
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()
        return p

    def _wait(self):
        self.exit_code = self.pipeline.wait(self.stop_event)

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(30)


class DaemonProcess:
    """`python realtime_pipeline.py --config PATH` as a real child process, for crash and signal tests.

    start() may be called again after kill() or terminate(): the log file grows, and `log_text()`/`logged()`
    read only what the current run wrote."""

    def __init__(self, config_path, log_path):
        """`config_path`: one file, or a list of them (`--config` repeated, merged in order)."""
        paths = config_path if isinstance(config_path, (list, tuple)) else [config_path]
        self.config_paths = [str(p) for p in paths]
        self.config_path, self.log_path = self.config_paths[0], log_path
        self.proc = None
        self._log_offset = 0

    def start(self, ready_timeout: float = 40.0) -> "DaemonProcess":
        """Start and wait until ready: partitions assigned and the MQTT subscription acknowledged."""
        import subprocess
        import sys
        from pathlib import Path

        root = Path(__file__).resolve().parents[2]
        log = open(self.log_path, "ab")
        self._log_offset = log.tell()
        args = [a for p in self.config_paths for a in ("--config", p)]
        self.proc = subprocess.Popen([sys.executable, str(root / "realtime_pipeline.py"), *args],
                                     stdout=log, stderr=subprocess.STDOUT, cwd=root)
        wait_for(lambda: self.logged("event=partitions_assigned") and self.logged("event=mqtt_subscribed")
                 or self.proc.poll() is not None, ready_timeout, what="daemon ready")
        assert self.proc.poll() is None, f"daemon exited early:\n{self.log_tail()}"
        return self

    def log_text(self) -> str:
        """What the current run has logged so far."""
        with open(self.log_path, "rb") as f:
            f.seek(self._log_offset)
            return f.read().decode("utf-8", "replace")

    def logged(self, text: str) -> bool:
        return text in self.log_text()

    def log_tail(self, n: int = 40) -> str:
        with open(self.log_path, "rb") as f:
            return b"".join(f.readlines()[-n:]).decode("utf-8", "replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """kill -9: no shutdown at all."""
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self, timeout: float) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds it took to exit)."""
        started = time.monotonic()
        self.proc.terminate()
        code = self.proc.wait(timeout)
        return code, time.monotonic() - started

    def stop(self) -> int | None:
        """SIGTERM if still running (kill -9 after 30 s); the exit code, None if never started."""
        import subprocess

        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


class SteadyPublisher(threading.Thread):
    """Publishes `total` single readings at `rate`/s, each with a unique (sensor, timestamp) and value = sequence
    number, over a persistent QoS 1 session so paho resends what was in flight when the broker went away."""

    def __init__(self, root: str, total: int, rate: float, port: int = 1883, sensors: int = 8, t0: float | None = None):
        super().__init__(daemon=True)
        self.root, self.total, self.rate, self.sensors = root, total, rate, sensors
        self.t0 = t0 if t0 is not None else time.time() - 3600
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"steady-{uuid.uuid4().hex[:8]}", clean_session=False)
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.2, 2)
        # Count broker acknowledgements ourselves: a message published while disconnected stays queued in
        # paho and goes out after reconnecting, but its info object reports the disconnection as an error.
        self.acked: set[int] = set()
        self.client.on_publish = lambda _c, _u, mid, _rc, _p: self.acked.add(mid)
        self.client.connect(host="127.0.0.1", port=port)
        self.client.loop_start()
        self.published = 0

    def payload(self, i: int) -> tuple[str, bytes]:
        return (f"{self.root}/dev-{i % self.sensors}",
                f'{{"metric": "temperature", "value": {i}, "timestamp": {self.t0 + i * 0.001:.3f}}}'.encode())

    def run(self) -> None:
        start = time.monotonic()
        for i in range(self.total):
            delay = start + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            topic, body = self.payload(i)
            self.client.publish(topic, body, qos=1)
            self.published = i + 1

    def finish(self, timeout: float = 60.0) -> None:
        self.join(timeout)
        wait_for(lambda: len(self.acked) >= self.total, timeout, what=f"broker acks for {self.total} publishes")
        self.client.disconnect()
        self.client.loop_stop()
