"""Dead-letter sink: the original payload and key to a Kafka topic, with why and where in headers."""
from __future__ import annotations

import logging
from typing import Callable, Sequence

from confluent_kafka import KafkaException, Producer

from ..config import KafkaConfig
from ..ingest.kafka import producer_conf
from ..records import DeadLetter
from ..runtime.batch import Batch
from .base import BatchingSink

log = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    """Some dead letters were not confirmed by Kafka; the batch is sent again."""


class DeadLetterSink(BatchingSink):
    """Produces each dead letter and waits for Kafka to confirm before the batch counts as held."""

    name = "dead_letter"

    def __init__(self, kafka: KafkaConfig, client_id: str, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kafka = kafka
        self.client_id = client_id
        self.producer: Producer | None = None
        self.topic = kafka.topics.dead_letter
        # Called with each batch once it is durable (the dashboard keeps the recent ones to show).
        self.listeners: list[Callable[[Sequence[DeadLetter]], None]] = []

    def start(self) -> None:
        self.producer = Producer(producer_conf(self.kafka, f"{self.client_id}-dlq"))

    def select(self, batch: Batch) -> Sequence[DeadLetter]:
        return batch.dead

    def is_transient(self, err: BaseException) -> bool:
        return isinstance(err, (DeliveryFailed, KafkaException, BufferError))

    def write(self, records: Sequence[DeadLetter]) -> None:
        assert self.producer is not None
        errors: list = []

        def delivered(err, _msg):
            if err is not None:
                errors.append(err)

        for d in records:
            src = d.source
            self.producer.produce(self.topic, value=src.payload, key=src.key, headers=d.headers(), on_delivery=delivered)
        remaining = self.producer.flush(30.0)
        if errors or remaining:
            raise DeliveryFailed(f"{len(errors)} failed, {remaining} unconfirmed; first: {errors[:1]}")

    def after_write(self, records: Sequence[DeadLetter]) -> None:
        for d in records:
            self.metrics.dead_lettered.labels(d.kind, d.reason).inc()
            log.info("event=dead_letter reason=%s stage=%s mqtt_topic=%r partition=%d offset=%d",
                     d.reason, d.stage, d.source.mqtt_topic[:120], d.source.partition, d.source.offset)
        for listener in self.listeners:
            listener(records)

    def close(self) -> None:
        if self.producer is not None:
            self.producer.flush(5.0)
