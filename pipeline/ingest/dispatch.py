"""The consume-and-dispatch runner: the consumer thread reads the raw topic in batches, runs the stages, hands each
batch to the durable sinks and operators (best-effort ones have feeds: sink_feed.py) and commits what all hold."""
from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from ..config import KafkaConfig
from ..observability.metrics import Metrics
from ..records import Reading
from ..runtime.batch import Batch, BatchConsumer, InFlight, split_outputs
from ..runtime.chain import StageChain
from ..runtime.deadline import call_bounded
from ..clients.kafka import client_conf, consumer_conf, group_lag
from .assignment import AssignmentWatchdog
from .continuity import EVENT_LOG, METRIC, SENSOR_TYPE, TAKE, Continuity, Gap, missing_by_partition, sensor_id
from .consumed import gather, to_raw

log = logging.getLogger(__name__)
class ConsumeDispatch:
    """Consumes the raw topic in batches, runs the stage chain, fans batches out to the sinks.

    Single-instance mode assigns itself every partition (no group join: nothing to wait for, nothing that
    can wedge) and still commits under the group id, so lag tools work; the daemon's advisory lock keeps a
    second such daemon away. Group mode subscribes, and a watchdog reports an assignment that never comes."""

    def __init__(self, cfg: KafkaConfig, client_id: str, chain: StageChain, sinks: Sequence[BatchConsumer],
                 metrics: Metrics, batch_size: int, revoke_timeout_s: float, followers: Sequence = ()):
        self.cfg = cfg
        self.chain = chain
        self.sinks = list(sinks)
        # Told of assignment changes like the sinks, handed no batch: the best-effort sinks' feeds (group mode).
        self.followers = list(followers)
        self.metrics = metrics
        self.batch_size = batch_size
        self.revoke_timeout_s = revoke_timeout_s
        self.inflight = InFlight()
        self.stop_event = threading.Event()
        self.assigned: list[TopicPartition] = []
        self.client_id = f"{client_id}-consumer"
        self.consumer = Consumer(consumer_conf(cfg, self.client_id))
        self._consumed = metrics.kafka_consumed
        self.single = cfg.assignment == "single"
        self.watchdog = AssignmentWatchdog(cfg.assignment_timeout_s)
        self._next_partition_check = 0.0
        self._admin: AdminClient | None = None  # group mode's watchdog, made on first use
        self.continuity = Continuity(cfg.offset_gaps, cfg.gap_refetch_attempts, cfg.gap_refetch_wait_s)
        # Holes given up, as the consumer thread last saw them; replaced whole, read by status and the reporter.
        self.gaps_held: tuple[Gap, ...] = ()
        self._gaps_ever: set[tuple[str, int]] = set()  # the reporter's: partitions reported at least once

    # -- rebalance: finish and commit what we hold before a partition moves ------------------------
    def _on_assign(self, consumer, partitions) -> None:
        self.assigned = list(partitions)
        self._start_continuity(partitions)
        self.watchdog.assignment(time.monotonic(), bool(partitions))
        self._tell_sinks("partitions_assigned", {p.partition for p in partitions})
        log.info("event=partitions_assigned partitions=%s", ",".join(str(p.partition) for p in partitions))

    def _on_revoke(self, consumer, partitions) -> None:
        if self.inflight.wait_all(self.revoke_timeout_s):
            self._commit(asynchronous=False)
        else:
            log.warning("event=revoke_before_sinks_done note=uncommitted_batches_will_be_redelivered")
            self.inflight.drop()
        self._tell_sinks("partitions_revoked", {p.partition for p in partitions})
        for p in partitions:
            self.continuity.forget((p.topic, p.partition))
        self._gaps_changed()
        self.assigned = []
        self.watchdog.assignment(time.monotonic(), False)
        log.info("event=partitions_revoked partitions=%s", ",".join(str(p.partition) for p in partitions))

    def _tell_sinks(self, hook: str, partitions: set[int]) -> None:
        """Per-sensor state follows partition ownership: each sink drops or rebuilds its share."""
        for sink in (*self.sinks, *self.followers):
            try:
                getattr(sink, hook)(partitions)
            except Exception:  # noqa: BLE001 - a failed hand-off must not break the rebalance; logged loudly
                log.exception("event=partition_handoff_failed sink=%s hook=%s", sink.name, hook)

    def _start_continuity(self, partitions) -> None:
        """Where each partition will be read from: its committed offset, else (auto.offset.reset earliest) its
        start. Not the first message: a hole can be right at the start."""
        try:
            committed = self.consumer.committed([TopicPartition(p.topic, p.partition) for p in partitions], timeout=10.0)
        except KafkaException as err:
            log.warning("event=committed_offsets_unknown error=%s note=continuity_checked_from_first_message", err)
            committed = [TopicPartition(p.topic, p.partition) for p in partitions]
        for tp in committed:
            start = tp.offset if tp.error is None and tp.offset >= 0 else None
            if start is None:
                try:
                    start = self.consumer.get_watermark_offsets(tp, timeout=5.0)[0]
                except KafkaException as err:
                    log.warning("event=log_start_unknown partition=%d error=%s", tp.partition, err)
            self.continuity.start((tp.topic, tp.partition), start)

    def _commit(self, asynchronous: bool = True) -> None:
        offsets = self.continuity.cap(self.inflight.completed())
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
    # -- assignment ----------------------------------------------------------------------------------
    def _topic_partitions(self) -> list[TopicPartition]:
        topic = self.cfg.topics.raw
        md = self.consumer.list_topics(topic, timeout=10.0).topics.get(topic)
        if md is None or md.error is not None:
            raise KafkaException(md.error if md is not None else f"topic {topic} not found")
        return [TopicPartition(topic, p) for p in sorted(md.partitions)]

    def _assign_all(self) -> None:
        """Single-instance mode: every partition, from the group's committed offsets (or the earliest)."""
        tps = self._topic_partitions()
        new = [tp for tp in tps if tp.partition not in {a.partition for a in self.assigned}]
        if not new:
            return
        if self.assigned:  # the topic grew: keep reading the old partitions, add the new ones
            self.consumer.incremental_assign(new)
            self._start_continuity(new)
            self.assigned = self.assigned + new
            self._tell_sinks("partitions_assigned", {p.partition for p in self.assigned})
            log.info("event=partitions_assigned partitions=%s mode=single", ",".join(str(p.partition) for p in self.assigned))
        else:
            self.consumer.assign(new)
            self._on_assign(self.consumer, new)

    def _watch_assignment(self) -> None:
        """Group mode: look at the topic while we hold no partition; report a stall once, and its end."""
        now = time.monotonic()
        if not self.watchdog.due(now):
            return
        was = self.watchdog.stall
        try:
            if self._admin is None:  # an AdminClient: the consumer itself cannot fetch offsets while its join hangs
                self._admin = AdminClient(client_conf(self.cfg, f"{self.client_id}-watchdog"))
            lag, committed = group_lag(self._admin, self.cfg.topics.raw, self.cfg.consumer_group, 5.0)
        except (KafkaException, KeyError, concurrent.futures.TimeoutError) as err:
            log.warning("event=assignment_check_failed error=%s", err)
            return
        stall = self.watchdog.observe(time.monotonic(), sum(lag.values()), sum(max(0, o) for o in committed.values()))
        self.metrics.consumer_stalled.set(1 if stall else 0)
        if stall and not was:
            log.error("event=consumer_stalled consumer=%s group=%s topic=%s unassigned_s=%.0f lag=%d note=no partitions "
                      "assigned while messages wait and the group commits nothing; check the group's members and state "
                      "(kafka-consumer-groups --describe --group %s); a member killed during its shutdown can leave a "
                      "group wedged on some brokers; one instance only: kafka.assignment single",
                      self.client_id, self.cfg.consumer_group, self.cfg.topics.raw, stall.unassigned_s, stall.lag,
                      self.cfg.consumer_group)
        elif was and not stall:
            log.info("event=consumer_stall_cleared consumer=%s", self.client_id)

    def stop(self) -> None:
        """End the consume loop after the current batch (the daemon then drains and closes)."""
        self.stop_event.set()

    def status(self) -> tuple[bool, str]:
        """(ok, detail) for readiness: a stalled consumer, or one holding a partition's commits at a hole, is not ready."""
        held = self.gaps_held
        if held:
            return False, "; ".join(
                f"partition {g.partition} of {g.topic}: offsets {g.first}-{g.last} ({g.missing} records) missing after "
                f"{g.attempts} fetches, commits held at offset {g.first}" for g in held)
        stall = self.watchdog.stall
        if stall is not None:
            return False, (f"consumer {self.client_id} (group {self.cfg.consumer_group}) has had no partitions for "
                           f"{stall.unassigned_s:.0f} s while {stall.lag} message(s) wait and nobody commits")
        if self.assigned:
            return True, f"{len(self.assigned)} partition(s) assigned" + (" (single-instance)" if self.single else "")
        return True, "running, no partitions assigned (yet, or other instances hold them all)"

    def gaps(self) -> tuple[Gap, ...]:
        """Holes given up on the partitions held now (commits stop at each)."""
        return self.gaps_held

    def in_flight(self) -> int:
        """Batches handed to the sinks and not yet committed."""
        return len(self.inflight)

    def run(self) -> None:
        if self.single:
            self._next_partition_check = time.monotonic() + 60.0
            while not self.assigned and not self.stop_event.is_set():
                try:
                    self._assign_all()
                except KafkaException as err:  # the broker is not answering yet: keep trying, as at any start
                    log.warning("event=assign_failed error=%s note=retrying", err)
                    self.stop_event.wait(1.0)
        else:
            self.watchdog.assignment(time.monotonic(), False)
            self.consumer.subscribe([self.cfg.topics.raw], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                    on_lost=self._on_revoke)
        timeout = self.cfg.poll_timeout_s
        linger = self.cfg.consume_linger_ms / 1000.0
        while not self.stop_event.is_set():
            if self.single:
                if time.monotonic() >= self._next_partition_check:  # the topic may grow
                    self._next_partition_check = time.monotonic() + 60.0
                    try:
                        self._assign_all()
                    except KafkaException as err:
                        log.warning("event=partition_check_failed error=%s", err)
            elif not self.assigned:
                self._watch_assignment()
            self._refetch()
            self._commit()
            # consume(n, timeout) waits until it has n messages or the timeout passes: at moderate rates
            # that wait would be every batch's latency. Wait for the first message only, then take
            # whatever else is already fetched.
            first = self.consumer.poll(timeout)
            if first is None:
                self.chain.idle(time.time())  # after a burst its sensors' state is released without a new reading
                continue
            msgs = gather(self.consumer, first, self.batch_size, linger)
            self._handle(msgs)
            first = msgs = None  # not kept while polling: after a burst they would hold its last batch's memory

    def _handle(self, msgs: list) -> None:
        raws: list = []
        offsets: dict[tuple[str, int], int] = {}
        check, now, passed = self.continuity.check, time.monotonic(), 0
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("event=consume_error error=%s", err)
                continue
            tp = (msg.topic(), msg.partition())
            if check(tp, msg.offset(), now) != TAKE:  # past a hole (read again after it) or read before
                passed += 1
                continue
            raws.append(to_raw(msg))
            offsets[tp] = msg.offset() + 1
        readings, dead = self.chain.run_batch(raws)  # in message order: one device's readings stay in order
        self.chain.flush_counts()
        self._consumed.inc(len(msgs) - passed)
        if passed:
            self.metrics.offset_gap_dropped.inc(passed)
        if self.continuity.events:
            self._gap_events()
        readings, logs = split_outputs(readings, offline := [])
        batch = Batch(readings, dead, offsets, len(self.sinks), logs=logs, offline=offline)
        self.inflight.add(batch)
        for sink in self.sinks:
            if not self._offer(sink, batch):
                return

    # -- offset continuity (continuity.py decides; this reads again, logs and counts) --------------------
    def _refetch(self) -> None:
        """Seek the partitions with a hole back to its first offset: the next fetch starts there."""
        for (topic, partition), offset in self.continuity.seeks_due(time.monotonic()):
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as err:  # taken away by a rebalance, or not fetching yet: try again shortly
                self.continuity.seek_failed((topic, partition))
                log.warning("event=offset_gap_seek_failed topic=%s partition=%d offset=%d error=%s",
                            topic, partition, offset, err)

    def _gap_events(self) -> None:
        for event, g in list(self.continuity.events):
            if event == "detected":  # behind retention? what it deleted no fetch brings back
                try:
                    low = self.consumer.get_watermark_offsets(TopicPartition(g.topic, g.partition), timeout=5.0)[0]
                    self.continuity.log_start((g.topic, g.partition), low)
                except KafkaException as err:
                    log.warning("event=log_start_unknown partition=%d error=%s", g.partition, err)
        for event, g in self.continuity.take_events():
            self.metrics.offset_gaps.labels(event).inc()
            level, note = EVENT_LOG[event]
            log.log(level, "event=offset_gap_%s topic=%s partition=%d first=%d last=%d missing=%d attempts=%d note=%s",
                    event, g.topic, g.partition, g.first, g.last, g.missing, g.attempts, note)
        self._gaps_changed()

    def _gaps_changed(self) -> None:
        held = tuple(self.continuity.held())
        if held != self.gaps_held:
            for (_, partition) in missing_by_partition(self.gaps_held):
                self.metrics.offset_gap_missing.labels(str(partition)).set(0)
            for (_, partition), n in missing_by_partition(held).items():
                self.metrics.offset_gap_missing.labels(str(partition)).set(n)
            self.gaps_held = held

    def gap_readings(self) -> list[Reading]:
        """Records missing for good per partition with a hole since start (0 once it is behind us), as readings."""
        missing = missing_by_partition(self.gaps_held)
        self._gaps_ever.update(missing)
        now = time.time()
        return [Reading(sensor_id(t, p), SENSOR_TYPE, None, METRIC, float(missing.get((t, p), 0)), now, now)
                for t, p in sorted(self._gaps_ever)]

    def _offer(self, sink: BatchConsumer, batch: Batch) -> bool:
        """Queue the batch for a sink. While the sink's queue is full (its service is slow or down) the
        partitions are paused, and consume() keeps being called so we stay in the group."""
        if sink.offer(batch):
            return True
        paused = list(self.assigned)
        self.consumer.pause(paused)
        self.metrics.consumer_paused.set(1)
        log.warning("event=consumer_paused sink=%s note=sink_queue_full", sink.name)
        rewind: dict[tuple[str, int], int] = {}
        try:
            while not self.stop_event.is_set():
                if sink.offer(batch, timeout=0.1):
                    return True
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
        """After the loop ended and the sinks had their time: commit what every sink holds, leave the group,
        all within `timeout`. True only if every batch was held and committed and the consumer closed."""
        deadline = time.monotonic() + timeout
        held = self.inflight.wait_all(timeout / 4)  # the sinks have stopped: most of the time is for the close

        def commit_and_close() -> None:
            offsets = self.continuity.cap(self.inflight.completed())
            # The rest no sink will finish now: it stays uncommitted, and forgetting it keeps the revoke
            # that close() runs from waiting revoke_timeout_s for it.
            self.inflight.drop()
            try:
                if offsets:
                    tps = self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                               asynchronous=False)
                    failed = [tp for tp in tps or () if tp.error is not None]
                    if failed:
                        raise KafkaException(failed[0].error)
                    self.metrics.kafka_commits.inc()
            finally:
                self.consumer.close()

        # A synchronous commit and close() take no timeout and wait for a broker that does not answer
        # (frozen, partitioned): run them in a helper thread and stop waiting at the deadline.
        closed = call_bounded("kafka_commit_close", commit_and_close, deadline - time.monotonic())
        if not held:
            log.warning("event=drain_incomplete note=batches_not_held_by_every_sink_stay_uncommitted")
        return held and closed
