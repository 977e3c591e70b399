"""Small real clients for tests: an MQTT publisher, a dead-letter reader, a pipeline runner."""
from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as mqtt
from confluent_kafka import Consumer
from paho.mqtt.enums import CallbackAPIVersion

import pytest

from pipeline.runtime.daemon import Pipeline


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

    def publish(self, topic: str, payload, qos: int = 1):
        if isinstance(payload, str):
            payload = payload.encode("utf-8", "surrogateescape")
        return self.client.publish(topic, payload, qos=qos)

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
