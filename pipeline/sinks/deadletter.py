"""Dead letters to Kafka: the original payload and key, with why and where in headers.

Three topics by reason class (README, "Dead letters"): invalid input, processing failure, retry
exhaustion. `DeadLetterWriter` sends synchronously (any sink can use it for records it must give
up on); `DeadLetterSink` is the batching thread for dead letters the stages produced.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Callable, Sequence

from confluent_kafka import KafkaException, Producer

from ..config import KafkaConfig
from ..clients.kafka import producer_conf
from ..observability.metrics import Metrics
from ..records import EXHAUSTED, FAILED, INVALID, DeadLetter
from ..runtime.batch import Batch
from .base import BatchingSink

log = logging.getLogger(__name__)


# How many source messages sent as dead letters by the sinks are remembered: a message refused by two sinks (or in
# two writes of one) is sent once. Far more than a batch or a redelivery window holds; about 100 bytes each.
SENT_REMEMBERED = 100_000


class DeliveryFailed(Exception):
    """Some dead letters were not confirmed by Kafka; they are sent again."""


def dead_letter_topics(kafka: KafkaConfig) -> dict[str, str]:
    t = kafka.topics
    return {INVALID: t.dead_letter, FAILED: t.dead_letter_failed, EXHAUSTED: t.dead_letter_exhausted}


class DeadLetterWriter:
    """Thread-safe: produce dead letters and wait until Kafka confirmed every one of them."""

    def __init__(self, kafka: KafkaConfig, client_id: str, metrics: Metrics):
        self.topics = dead_letter_topics(kafka)
        self.metrics = metrics
        self.producer = Producer(producer_conf(kafka, f"{client_id}-dlq"))
        self._sent: OrderedDict = OrderedDict()  # (topic, partition, offset) of source messages sent once_per_message
        self._sent_lock = threading.Lock()  # every sink's thread sends through this writer

    def send(self, records: Sequence[DeadLetter], timeout: float = 30.0, once_per_message: bool = False) -> None:
        """Produce the letters and wait for Kafka to confirm them; with `once_per_message`, a letter whose source
        message was sent that way before (by another sink, or an earlier write) is left out."""
        claimed: list = []
        if once_per_message:
            records, claimed = self._claim(records)
            if not records:
                return
        try:
            self._send(records, timeout)
        except BaseException:
            with self._sent_lock:  # not sent after all: the next try (or another sink) sends it
                for key in claimed:
                    self._sent.pop(key, None)
            raise

    def _claim(self, records: Sequence[DeadLetter]) -> tuple[list[DeadLetter], list]:
        fresh, keys = [], []
        with self._sent_lock:
            for d in records:
                src = d.source
                key = (src.topic, src.partition, src.offset)
                if src.offset >= 0:
                    if key in self._sent:
                        log.info("event=dead_letter_skipped reason=message_sent_already stage=%s partition=%d offset=%d",
                                 d.stage, src.partition, src.offset)
                        continue
                    self._sent[key] = True
                    keys.append(key)
                    if len(self._sent) > SENT_REMEMBERED:
                        self._sent.popitem(last=False)
                fresh.append(d)
        return fresh, keys

    def _send(self, records: Sequence[DeadLetter], timeout: float) -> None:
        errors: list = []
        pending = [0]

        def delivered(err, _msg):
            pending[0] -= 1
            if err is not None:
                errors.append(err)

        for d in records:
            src = d.source
            pending[0] += 1
            self.producer.produce(self.topics[d.kind], value=src.payload, key=src.key, headers=d.headers(),
                                  on_delivery=delivered)
        self.producer.flush(timeout)
        if errors or pending[0]:
            raise DeliveryFailed(f"{len(errors)} failed, {pending[0]} unconfirmed; first: {errors[:1]}")
        for d in records:
            # One per letter, under its main reason; each refused reading is in pipeline_invalid_records_total.
            self.metrics.dead_lettered.labels(d.kind, d.reason).inc()
            log.info("event=dead_letter kind=%s reason=%s stage=%s refused=%d mqtt_topic=%r partition=%d offset=%d",
                     d.kind, d.reason, d.stage, len(d.refused) or 1, d.source.mqtt_topic[:120], d.source.partition,
                     d.source.offset)

    def close(self) -> None:
        self.producer.flush(5.0)


class DeadLetterSink(BatchingSink):
    """Batches the stages' dead letters; a batch counts as held once Kafka confirmed them all."""

    name = "dead_letter"

    def __init__(self, writer: DeadLetterWriter, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.writer = writer
        # Called with each batch once it is durable (the dashboard keeps the recent ones to show).
        self._listeners: list[Callable[[Sequence[DeadLetter]], None]] = []

    def subscribe(self, listener: Callable[[Sequence[DeadLetter]], None]) -> None:
        """`listener(letters)` is called in this sink's thread with each batch once Kafka holds it."""
        self._listeners.append(listener)

    def select(self, batch: Batch) -> Sequence[DeadLetter]:
        return batch.dead

    def is_transient(self, err: BaseException) -> bool:
        return isinstance(err, (DeliveryFailed, KafkaException, BufferError))

    def write(self, records: Sequence[DeadLetter]) -> None:
        self.writer.send(records)

    def after_write(self, records: Sequence[DeadLetter]) -> None:
        for listener in self._listeners:  # counted and logged by the writer
            listener(records)

    def close(self) -> None:
        self.writer.close()
