"""Kafka -> stages -> sinks: the consumer thread turns raw messages into batches and commits offsets
only for batches that every sink holds."""
from __future__ import annotations

import logging
import queue
import threading
from typing import Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from ..config import KafkaConfig
from ..observability.metrics import Metrics
from ..records import RawMessage
from ..runtime.batch import Batch, InFlight, split_outputs
from ..runtime.chain import StageChain
from ..sinks.base import BatchingSink
from .kafka import consumer_conf
from .mqtt_bridge import MQTT_TOPIC_HEADER, ORIGINAL_SIZE_HEADER

log = logging.getLogger(__name__)


def to_raw(msg) -> RawMessage:
    """A consumed Kafka message -> RawMessage (mqtt topic and original size from headers)."""
    mqtt_topic = ""
    original_size = 0
    for name, value in msg.headers() or ():
        if name == MQTT_TOPIC_HEADER:
            mqtt_topic = value.decode("utf-8", "replace")
        elif name == ORIGINAL_SIZE_HEADER:
            original_size = int(value)
    return RawMessage(mqtt_topic, msg.value() or b"", msg.timestamp()[1] / 1000.0, msg.key(), msg.topic(),
                      msg.partition(), msg.offset(), original_size)


class KafkaSource:
    """Consumes the raw topic in batches, runs the stage chain, fans batches out to the sinks."""

    def __init__(self, cfg: KafkaConfig, client_id: str, chain: StageChain, sinks: Sequence[BatchingSink],
                 metrics: Metrics, batch_size: int, revoke_timeout_s: float):
        self.cfg = cfg
        self.chain = chain
        self.sinks = list(sinks)
        self.metrics = metrics
        self.batch_size = batch_size
        self.revoke_timeout_s = revoke_timeout_s
        self.inflight = InFlight()
        self.stop_event = threading.Event()
        self.assigned: list[TopicPartition] = []
        self.consumer = Consumer(consumer_conf(cfg, f"{client_id}-consumer"))
        self._consumed = metrics.kafka_consumed

    # -- rebalance: finish and commit what we hold before a partition moves ------------------------
    def _on_assign(self, consumer, partitions) -> None:
        self.assigned = list(partitions)
        self._tell_sinks("partitions_assigned", {p.partition for p in partitions})
        log.info("event=partitions_assigned partitions=%s", ",".join(str(p.partition) for p in partitions))

    def _on_revoke(self, consumer, partitions) -> None:
        if self.inflight.wait_all(self.revoke_timeout_s):
            self._commit(asynchronous=False)
        else:
            log.warning("event=revoke_before_sinks_done note=uncommitted_batches_will_be_redelivered")
            self.inflight.drop()
        self._tell_sinks("partitions_revoked", {p.partition for p in partitions})
        self.assigned = []
        log.info("event=partitions_revoked partitions=%s", ",".join(str(p.partition) for p in partitions))

    def _tell_sinks(self, hook: str, partitions: set[int]) -> None:
        """Per-sensor state follows partition ownership: each sink drops or rebuilds its share."""
        for sink in self.sinks:
            try:
                getattr(sink, hook)(partitions)
            except Exception:  # noqa: BLE001 - a failed hand-off must not break the rebalance; logged loudly
                log.exception("event=partition_handoff_failed sink=%s hook=%s", sink.name, hook)

    def _commit(self, asynchronous: bool = True) -> None:
        offsets = self.inflight.completed()
        if not offsets:
            return
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            self.consumer.commit(offsets=tps, asynchronous=asynchronous)
            self.metrics.kafka_commits.inc()
        except KafkaException as err:
            # A failed commit only means redelivery after a restart; the next commit supersedes it.
            log.warning("event=commit_failed error=%s", err)

    # -- main loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        self.consumer.subscribe([self.cfg.topics.raw], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)
        timeout = self.cfg.poll_timeout_s
        while not self.stop_event.is_set():
            self._commit()
            # consume(n, timeout) waits until it has n messages or the timeout passes: at moderate rates
            # that wait would be every batch's latency. Wait for the first message only, then take
            # whatever else is already fetched.
            first = self.consumer.poll(timeout)
            if first is None:
                continue
            msgs = [first]
            if self.batch_size > 1:
                msgs.extend(self.consumer.consume(self.batch_size - 1, 0))
            self._handle(msgs)

    def _handle(self, msgs: list) -> None:
        readings: list = []
        dead: list = []
        offsets: dict[tuple[str, int], int] = {}
        run = self.chain.run
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("event=consume_error error=%s", err)
                continue
            run(to_raw(msg), readings, dead)
            offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
        self.chain.flush_counts()
        self._consumed.inc(len(msgs))
        readings, logs = split_outputs(readings)
        batch = Batch(readings, dead, offsets, len(self.sinks), logs=logs)
        self.inflight.add(batch)
        for sink in self.sinks:
            if not self._offer(sink, batch):
                return

    def _offer(self, sink: BatchingSink, batch: Batch) -> bool:
        """Queue the batch for a sink. While the sink's queue is full (its service is slow or down) the
        partitions are paused, and consume() keeps being called so we stay in the group."""
        try:
            sink.queue.put_nowait(batch)
            return True
        except queue.Full:
            pass
        paused = list(self.assigned)
        self.consumer.pause(paused)
        self.metrics.consumer_paused.set(1)
        log.warning("event=consumer_paused sink=%s note=sink_queue_full", sink.name)
        rewind: dict[tuple[str, int], int] = {}
        try:
            while not self.stop_event.is_set():
                try:
                    sink.queue.put(batch, timeout=0.1)
                    return True
                except queue.Full:
                    pass
                for msg in self.consumer.consume(self.batch_size, 0):
                    if msg.error() is None:  # fetched before the pause (or newly assigned): read it again later
                        rewind.setdefault((msg.topic(), msg.partition()), msg.offset())
            return False
        finally:
            self._resume(paused, rewind)

    def _resume(self, paused: list[TopicPartition], rewind: dict[tuple[str, int], int]) -> None:
        try:
            self.consumer.resume(paused)
        except KafkaException as err:  # a rebalance while paused may have taken some of them away
            log.warning("event=resume_failed error=%s", err)
        for (topic, partition), offset in rewind.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as err:
                log.warning("event=seek_failed partition=%d offset=%d error=%s", partition, offset, err)
        self.metrics.consumer_paused.set(0)
        log.info("event=consumer_resumed")

    def drain_and_close(self, timeout: float) -> bool:
        """After the loop ended: wait for the sinks to hold every batch, commit, leave the group."""
        ok = self.inflight.wait_all(timeout)
        self._commit(asynchronous=False)
        self.consumer.close()
        return ok
