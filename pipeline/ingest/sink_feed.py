"""A best-effort sink's own feed (as Kafka Connect runs a sink connector): its own consumer on the raw topic, its own
stage chain, and its checkpoint kept as that consumer's committed offsets, so it catches up after a slow spell, a
restart or a crash while the main consumer never waits for it.

Position: the committed offsets of the feed's own group (`<consumer_group>.sink.<name>`), a durable checkpoint that
outlives restarts and crashes. A partition the feed never committed starts where the main group stands (a new sink
begins with what the pipeline has not yet stored, not with the topic's whole retention), else at the earliest.
Delivery is at-least-once: a batch's offsets are committed only after the sink marked it written, so a crash
repeats only what was in flight. Partitions: every one in single-instance mode (`assign()`, no group protocol, nothing
to wedge); in group mode the ones the main consumer holds, told by its assign/revoke hooks.
"""
from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from ..config import KafkaConfig
from ..observability.metrics import Metrics
from ..runtime.batch import Batch, InFlight, split_outputs
from ..runtime.chain import StageChain
from ..clients.kafka import consumer_conf
from .consumed import to_raw

log = logging.getLogger(__name__)
LAG_EVERY_S = 5.0


def feed_group(consumer_group: str, sink: str) -> str:
    """The group id a best-effort sink's feed commits its checkpoint under."""
    return f"{consumer_group}.sink.{sink}"


def start_offsets(own: dict[int, int], main: dict[int, int], partitions) -> dict[int, int]:
    """Where each partition is read from: the feed's own checkpoint, else the main group's, else the earliest."""
    out = {}
    for p in partitions:
        at = own.get(p, -1)
        if at < 0:
            at = main.get(p, -1)
        out[p] = at if at >= 0 else OFFSET_BEGINNING
    return out


def lag(high: dict[int, int], position: dict[int, int]) -> int:
    """Records in the topic the sink has not yet written (a partition never read counts from 0)."""
    return sum(max(0, h - max(0, position.get(p, 0))) for p, h in high.items())


class SinkFeed:
    """Consumes the raw topic for one best-effort sink, runs the pure stages, hands it batches with back-pressure
    (waiting blocks only this feed) and commits what it wrote."""

    def __init__(self, cfg: KafkaConfig, client_id: str, sink, chain: StageChain, metrics: Metrics, batch_size: int):
        self.cfg, self.sink, self.chain, self.metrics = cfg, sink, chain, metrics
        self.batch_size = batch_size
        self.group = feed_group(cfg.consumer_group, sink.name)
        self.client_id = f"{client_id}-feed-{sink.name}"
        conf = consumer_conf(cfg, self.client_id)
        conf["group.id"] = self.group
        self.consumer = Consumer(conf)
        self.single = cfg.assignment == "single"
        self.stop_event = threading.Event()
        self.inflight = InFlight()
        self._lock = threading.Lock()
        self._wanted: set[int] | None = None  # group mode: the main consumer's partitions, applied by our thread
        self._held: set[int] = set()
        self.position: dict[int, int] = {}  # next offset to write per partition (what is committed)
        self.high: dict[int, int] = {}
        self.lag: int | None = None
        self._next_lag = 0.0
        self._gauge = metrics.sink_feed_lag.labels(sink.name)

    # -- partitions -------------------------------------------------------------------------------
    def partitions_assigned(self, partitions: set[int]) -> None:
        """The main consumer's full assignment (group mode): follow it."""
        with self._lock:
            self._wanted = set(partitions)

    def partitions_revoked(self, partitions: set[int]) -> None:
        """Partitions the main consumer gave up (group mode): another instance's feed reads them now."""
        with self._lock:
            self._wanted = (self._wanted or set()) - set(partitions)

    def _all_partitions(self) -> set[int]:
        md = self.consumer.list_topics(self.cfg.topics.raw, timeout=10.0).topics.get(self.cfg.topics.raw)
        if md is None or md.error is not None:
            raise KafkaException(md.error if md is not None else f"topic {self.cfg.topics.raw} not found")
        return set(md.partitions)

    def _committed(self, consumer: Consumer, partitions) -> dict[int, int]:
        topic = self.cfg.topics.raw
        tps = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10.0)
        return {tp.partition: tp.offset for tp in tps if tp.error is None}

    def _main_committed(self, partitions) -> dict[int, int]:
        """The main group's committed offsets, read without joining it (a consumer that only asks)."""
        reader = Consumer(consumer_conf(self.cfg, f"{self.client_id}-start"))
        try:
            return self._committed(reader, partitions)
        finally:
            reader.close()

    def _apply(self, wanted: set[int]) -> None:
        """Hold exactly `wanted`: what goes is committed as far as written, what comes starts at its checkpoint."""
        if wanted == self._held:
            return
        topic = self.cfg.topics.raw
        gone, new = self._held - wanted, wanted - self._held
        if gone:
            self.inflight.wait_all(5.0)  # batches the sink has not written are read again by their next owner
            self._commit(asynchronous=False)
            self.inflight.drop()
            self.consumer.incremental_unassign([TopicPartition(topic, p) for p in sorted(gone)])
            for p in gone:
                self.position.pop(p, None)
                self.high.pop(p, None)
        if new:
            own = self._committed(self.consumer, new)
            fresh = [p for p in new if own.get(p, -1) < 0]
            main = self._main_committed(fresh) if fresh else {}
            start = start_offsets(own, main, new)
            if fresh:
                self._pin_start(topic, {p: start[p] for p in fresh})
            self.consumer.incremental_assign([TopicPartition(topic, p, start[p]) for p in sorted(new)])
            for p, at in start.items():
                self.position[p] = max(0, at)
            log.info("event=sink_feed_assigned sink=%s group=%s start=%s", self.sink.name, self.group,
                     ",".join(f"{p}:{'earliest' if at == OFFSET_BEGINNING else at}" for p, at in sorted(start.items())))
        self._held = set(wanted)

    def _pin_start(self, topic: str, start: dict[int, int]) -> None:
        """A partition the feed never committed starts where the main group stands *now*: commit that at once, before
        any batch, so a crash before the feed's first own commit resumes here, not at wherever the main group has
        moved on to by then (which would skip what the sink never got)."""
        pinned = {}
        for p, at in start.items():
            if at == OFFSET_BEGINNING:  # a commit needs a real offset: the partition's first
                at = self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10.0)[0]
                start[p] = at
            pinned[p] = at
        self.consumer.commit(offsets=[TopicPartition(topic, p, at) for p, at in sorted(pinned.items())],
                             asynchronous=False)

    def _want(self) -> set[int] | None:
        if self.single:
            return self._held or self._all_partitions()
        with self._lock:
            return None if self._wanted is None else set(self._wanted)

    # -- loop -------------------------------------------------------------------------------------
    def stop(self) -> None:
        """End the consume loop (before the sink is told to finish)."""
        self.stop_event.set()

    def run(self) -> None:
        timeout = self.cfg.poll_timeout_s
        while not self.stop_event.is_set():
            try:
                wanted = self._want()
                if wanted is not None:
                    self._apply(wanted)
            except KafkaException as err:  # the broker is not answering yet: keep trying
                log.warning("event=sink_feed_assign_failed sink=%s error=%s note=retrying", self.sink.name, err)
                self.stop_event.wait(1.0)
                continue
            self._commit()
            self._measure_lag()
            if not self._held:
                self.stop_event.wait(timeout)
                continue
            msgs = self.consumer.consume(self.batch_size, timeout)
            if msgs:
                self._handle(msgs)

    def _handle(self, msgs: list) -> None:
        raws, offsets = [], {}
        for msg in msgs:
            if msg.error() is not None:
                if msg.error().fatal():
                    raise KafkaException(msg.error())
                continue
            raws.append(to_raw(msg))
            offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
            self.high[msg.partition()] = max(self.high.get(msg.partition(), 0), msg.offset() + 1)
        # Dead letters are the main path's: it has sent them already.
        outputs, dead = self.chain.run_batch(raws)
        if dead:
            log.info("event=sink_feed_refused sink=%s messages=%d note=dead_lettered_by_the_main_path",
                     self.sink.name, len(dead))
        readings, logs = split_outputs(outputs)
        batch = Batch(readings, [], offsets, 1, logs=logs)
        self.inflight.add(batch)
        # Back-pressure on this feed only: librdkafka's prefetch is bounded (queued.max.messages.kbytes), and
        # a consumer without a group has no poll deadline to miss while it waits.
        if not self.sink.put(batch, self.stop_event):
            log.info("event=sink_feed_stopped_waiting sink=%s note=batch_read_again_after_restart", self.sink.name)

    def _commit(self, asynchronous: bool = True) -> None:
        offsets = self.inflight.completed()
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                 asynchronous=asynchronous)
        except KafkaException as err:  # the next commit supersedes it; a restart repeats at most this much
            log.warning("event=sink_feed_commit_failed sink=%s error=%s", self.sink.name, err)
            return
        for (_, p), o in offsets.items():
            self.position[p] = o

    def _measure_lag(self) -> None:
        now = time.monotonic()
        if now < self._next_lag or not self._held:
            return
        self._next_lag = now + LAG_EVERY_S
        topic = self.cfg.topics.raw
        for p in self._held:
            try:
                self.high[p] = self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=2.0)[1]
            except KafkaException:
                pass  # keep the last one seen
        self.lag = lag(self.high, self.position)
        self._gauge.set(self.lag)

    def close(self, timeout: float) -> None:
        """After the sink finished: commit what it wrote, then close (within `timeout`)."""
        self.inflight.wait_all(min(1.0, timeout))
        self._commit(asynchronous=False)
        self.consumer.close()
        log.info("event=sink_feed_closed sink=%s position=%s", self.sink.name,
                 ",".join(f"{p}:{o}" for p, o in sorted(self.position.items())))

    def status(self) -> tuple[int | None, str]:
        """(lag, detail) for /ready: shown, never failing it."""
        if not self._held:
            return self.lag, "no partitions yet"
        return self.lag, f"{self.lag if self.lag is not None else '?'} records behind on {len(self._held)} partition(s)"
