"""The batching run loop every sink and operator runner shares: one thread, one bounded queue, flush at size or
interval (pipeline/sinks/base.py and pipeline/operators/base.py build on it).

A backend only implements `select(batch)` (which records it writes), `write(records)` and
`is_transient(err)`. The runner owns batching, retries with backoff, metrics and telling each batch
it is durable here (which is what lets the consumer commit offsets).

Failures: a transient error (the service is away, or up but refusing the service: out of memory,
read-only, no privilege, disk full; pipeline/clients/errors.py) holds the batch and is retried with backoff
until the store takes it, so an outage or a refusing store pauses the pipeline instead of dead-lettering it;
meanwhile the sink says it is blocked, with the store's message (`blocked()`, pipeline_sink_blocked). Any
other error means some record is refused: the batch is split in halves until the refused record is alone (no
backoff: a non-transient error is not retried), which is dead-lettered as retry exhaustion after
`retry.max_attempts` tries (1 by default: at once, so refused records cannot hold up the sink); the rest is
written. The refused records of a batch go out as one letter per source message, and a message another sink
dead-lettered already is not sent again (DeadLetterWriter.send(..., once_per_message=True)), so a replay
sends each message back once.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Sequence

from ..clients.errors import is_refusal, is_transient, store_message
from ..config import RetryConfig, SinkConfig
from ..observability.metrics import Metrics
from ..records import EXHAUSTED, DeadLetter
from .batch import Batch
from .busy import Busy
from .record_queue import RecordQueue
from .retry import Backoff, Stopped, retry_call

log = logging.getLogger(__name__)
_STOP = object()
# A round that ended at its interval with fewer records than batch_size / QUIET_BELOW was quiet (a low rate): the
# next round sleeps until its interval is over and then takes every batch queued meanwhile, instead of waking for
# each one. At 1,000 msg/s the consumer hands over a batch every 40-60 ms, so a sink with a 250 ms interval woke
# five times a round for one write. The round's first batch still wakes the thread and starts the interval, so
# no batch waits longer than before. A busy round (or a queue half full) goes back to taking batches as they come.
# A quiet round that got a single batch in its interval bought nothing by waiting (the Redis sink's 5 ms between
# batches 40 ms apart): the next round writes its first batch at once, unless others are queued with it.
QUIET_BELOW = 2

_records_in = lambda item: len(item.readings) + len(item.logs) + len(item.dead) if item is not _STOP else 1  # noqa: E731


class BatchingRunner:
    """Base class; subclasses set `name` and implement select/write/is_transient (and start/close)."""

    name = "sink"
    # Seconds between calls of `tick()` in the sink's thread (timed work: window closing, alert timers); None: never.
    tick_interval_s: float | None = None

    def __init__(self, settings: SinkConfig, retry: RetryConfig, metrics: Metrics, queue_max_batches: int,
                 dead_letters=None):
        self.settings = settings
        self.dead_letters = dead_letters  # a DeadLetterWriter, for records this backend refuses
        self.retry = retry
        self.metrics = metrics
        # Bounded in records, queue_max_batches of its own full writes however the consumer cut them (record_queue.py)
        self.queue = RecordQueue(queue_max_batches * settings.batch_size, queue_max_batches, _records_in)
        self._durable = True
        self.stop_event = threading.Event()  # set at the shutdown deadline: give up, leave the rest uncommitted
        self._finishing = threading.Event()  # flush what is queued, then end
        # Wakes a thread sleeping through a quiet round: finish, stop, or a queue filling up (see QUIET_BELOW).
        self._nudge = threading.Event()
        self.last_success: float | None = None
        self.busy = Busy()  # the daemon's BusyWatch reads it (runtime/busy.py)
        # (since, the store's message) while a write is held by an outage or a refusal; None while writes pass.
        # Written by this sink's thread only, read by the status interface: one assignment, no lock.
        self._blocked: tuple[float, str] | None = None

    # -- to implement ------------------------------------------------------------------------
    def start(self) -> None:
        """Open connections; called before the thread starts."""

    def select(self, batch: Batch) -> Sequence:
        raise NotImplementedError

    def write(self, records: Sequence) -> int | None:
        """Write the records; return how many were really written if that can be fewer (None: all)."""
        raise NotImplementedError

    def is_transient(self, err: BaseException) -> bool:
        """The service is away (retry until it is back), not refusing a record: decided in pipeline/clients/errors.py."""
        return is_transient(err)

    def close(self) -> None:
        """Release connections; called after the thread ended."""

    def tick(self) -> float | None:
        """Timed work, every `tick_interval_s`, in the sink's own thread (so it shares its state unlocked); may
        return seconds until the next tick if it has work left that should not wait that long."""

    def checkpoint(self, offsets: dict[tuple[str, int], int]) -> None:
        """A best-effort sink wrote everything before these offsets ((topic, partition) -> next offset). Its feed
        commits them as the sink's checkpoint once the batches are marked done; a sink may also keep them itself."""

    def accepts_stored(self) -> bool:
        """Readings already in `measurements` (log-count corrections) may be handed to this sink again."""
        return True

    def partitions_assigned(self, partitions: set[int]) -> None:
        """The consumer group gave this instance these raw-topic partitions (the full assignment)."""

    def partitions_revoked(self, partitions: set[int]) -> None:
        """These partitions go to another instance; their batches are written and committed already."""

    # -- runner ------------------------------------------------------------------------------
    @property
    def durable(self) -> bool:
        """The batch's Kafka offsets wait for this sink. Best-effort (set by pipeline/sinks/registry.py): they do
        not; the sink has its own feed (pipeline/ingest/sink_feed.py), which commits its own position."""
        return self._durable

    @durable.setter
    def durable(self, durable: bool) -> None:
        self._durable = durable
        self.queue.by_batches = not durable or self._blocked is not None  # record_queue.py says why

    def queue_depth(self) -> int:
        """Batches handed over and not yet taken by the thread."""
        return self.queue.batches()

    def blocked(self) -> tuple[float, str] | None:
        """(since, the store's message) while writes wait for the store to take them again; None otherwise."""
        return self._blocked

    def _block(self, err: BaseException) -> None:
        message = store_message(err)
        kind = "refused" if is_refusal(err) else "unreachable"
        if self._blocked is None:
            self.queue.by_batches = True  # an outage: pause the consumer after queue_max_batches batches
            self.metrics.sink_blocked.labels(self.name).set(1)
            log.warning("event=sink_blocked sink=%s kind=%s error=%r note=holding_batch", self.name, kind, message)
            self._blocked = (time.time(), f"{kind}: {message}")
        else:
            self._blocked = (self._blocked[0], f"{kind}: {message}")

    def _unblock(self) -> None:
        if self._blocked is not None:
            since, self._blocked = self._blocked[0], None
            self.queue.by_batches = not self._durable
            self.metrics.sink_blocked.labels(self.name).set(0)
            log.info("event=sink_unblocked sink=%s blocked_s=%.1f", self.name, time.time() - since)

    def offer(self, batch: Batch, timeout: float | None = None) -> bool:
        """Hand a batch over if the queue has room (within `timeout` seconds, or at once); False if it is full."""
        try:
            if timeout is None:
                self.queue.put_nowait(batch)
            else:
                self.queue.put(batch, timeout=timeout)
        except queue.Full:
            return False
        self._nudge_if_filling()
        return True

    def _nudge_if_filling(self) -> None:
        """A quiet round sleeps through its interval; a queue half full (in records) means the rate rose: take it now."""
        if 2 * self.queue.qsize() >= self.queue.maxsize > 0:
            self._nudge.set()

    def stop(self) -> None:
        """Time is up: stop retrying and end the thread; what it does not hold stays uncommitted."""
        self.stop_event.set()
        self._nudge.set()
        if self.queue.empty():  # a thread idle on an empty queue waits in get() without a timeout: wake it
            try:
                self.queue.put_nowait(_STOP)
            except queue.Full:
                pass

    def put(self, batch: Batch, stop: threading.Event, poll: float = 0.1) -> bool:
        """Hand a batch over, waiting while the queue is full (back-pressure). False if stopping."""
        while not stop.is_set():
            try:
                self.queue.put(batch, timeout=poll)
            except queue.Full:
                self._nudge.set()
                continue
            self._nudge_if_filling()
            return True
        return False

    def finish(self) -> None:
        """Ask the thread to flush what it has queued and end. Never blocks: during an outage the queue
        is full and the thread is retrying, and the shutdown must go on to its deadline."""
        self._finishing.set()
        try:
            self.queue.put_nowait(_STOP)  # wakes a thread waiting on an empty queue
        except queue.Full:
            pass  # a full queue keeps the thread busy: it sees _finishing once it has taken the rest
        self._nudge.set()

    def run(self) -> None:
        interval = self.settings.flush_interval_ms / 1000.0
        limit = self.settings.batch_size
        gauge = self.metrics.queue_depth.labels(self.name)
        pending: list[Batch] = []
        records: list = []
        deadline = None
        quiet = False  # the last round was quiet: sleep through this one (QUIET_BELOW)
        lone = False  # ... and it held a single batch: write this round's first batch at once
        next_tick = None if self.tick_interval_s is None else time.monotonic() + self.tick_interval_s
        while True:
            if self.stop_event.is_set():
                # The shutdown deadline passed: no more write attempts (each may block for a connect timeout).
                queued = sum(1 for item, _ in list(self.queue.queue) if item is not _STOP)
                if records or queued:
                    log.warning("event=sink_stopped_unflushed sink=%s records=%d queued_batches=%d", self.name,
                                len(records), queued)
                return
            if self._finishing.is_set() and self.queue.empty():
                self._flush(pending, records)
                return
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if next_tick is not None:
                until_tick = max(0.0, next_tick - time.monotonic())
                timeout = until_tick if timeout is None else min(timeout, until_tick)
                if until_tick == 0.0:
                    self.busy.begin("tick")
                    again = None
                    try:
                        again = self.tick()
                    finally:
                        self.busy.end()
                    # A tick with work left (windows still to close) asks to come back sooner.
                    next_tick = time.monotonic() + (self.tick_interval_s if again is None
                                                    else min(again, self.tick_interval_s))
                    continue
            if quiet and deadline is not None:
                # A quiet round: sleep to its end (or a tick), then take everything queued meanwhile at once.
                self._nudge.wait(timeout)
                self._nudge.clear()
                items = self._take_queued()
            else:
                try:
                    items = [self.queue.get(timeout=timeout)]
                except queue.Empty:
                    items = []
                if lone and items:
                    items += self._take_queued()  # batches piling up show the rate rose
            gauge.set(self.queue.batches())
            for item in items:
                if item is _STOP:
                    self._flush(pending, records)
                    return
                pending.append(item)
                records.extend(self.select(item))
                if deadline is None:
                    deadline = time.monotonic() + interval
            # Not kept while the queue is waited on: after a burst the last batch (its readings, tens of thousands
            # of objects allocated among the burst's) would stay alive until the next one, keeping pymalloc's arenas.
            item = items = None
            if pending and (len(records) >= limit or time.monotonic() >= deadline or (lone and len(pending) == 1)):
                quiet = len(records) * QUIET_BELOW < limit
                lone = quiet and len(pending) == 1
                self._flush(pending, records)
                pending, records, deadline = [], [], None

    def _take_queued(self) -> list:
        """Every batch queued now, without waiting (ends at _STOP: nothing after it is taken)."""
        items = []
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return items
            items.append(item)
            if item is _STOP:
                return items

    def _flush(self, pending: list[Batch], records: list) -> None:
        if not pending:
            return
        self.busy.begin("write")
        try:
            self._flush_marked(pending, records)
        finally:
            self.busy.end()

    def _flush_marked(self, pending: list[Batch], records: list) -> None:
        if records:
            refused: list = []
            try:
                self._write_isolating(records, refused)
                self._dead_letter(refused)
            except Stopped:
                log.warning("event=sink_stopped_unflushed sink=%s records=%d", self.name, len(records))
                return  # not marked done: offsets stay uncommitted and Kafka redelivers
        self.last_success = time.time()
        self.metrics.sink_last_success.labels(self.name).set(self.last_success)
        if not self.durable:
            offsets: dict[tuple[str, int], int] = {}
            for batch in pending:
                offsets.update(batch.offsets)
            if offsets:
                self.checkpoint(offsets)
        for batch in pending:  # a durable sink's mark lets the main consumer commit; a best-effort one's, its feed
            batch.sink_done()

    def _write_retrying(self, records: Sequence) -> None:
        started = time.perf_counter()
        def on_retry(err, *_):
            self.metrics.retries.labels(f"{self.name}_write").inc()
            self._block(err)

        written = retry_call(lambda: self.write(records), operation=f"{self.name}_write", policy=self.retry,
                             is_transient=self.is_transient, stop=self.stop_event, on_retry=on_retry)
        self._unblock()
        self.metrics.sink_write_seconds.labels(self.name).observe(time.perf_counter() - started)
        self.metrics.sink_batch.labels(self.name).observe(len(records))
        # A backend that skips records (PostgreSQL's duplicates) returns what it really wrote.
        self.metrics.sink_written.labels(self.name).inc(len(records) if written is None else written)
        self.after_write(records)

    def _write_isolating(self, records: Sequence, refused: list) -> None:
        """Write the records; those refused alone are added to `refused` as (record, error, attempts, first
        failure), for `_dead_letter` once the whole batch is through."""
        try:
            self._write_retrying(records)
            return
        except Stopped:
            raise
        except Exception as err:  # noqa: BLE001 - not transient: some record is refused
            if self.stop_event.is_set():
                # Past the shutdown deadline the connections are being closed under us: no evidence of a
                # refused record, so nothing is dead-lettered; the batch stays uncommitted.
                raise Stopped(self.name) from err
            if self.dead_letters is None:
                raise
            if len(records) > 1:
                log.warning("event=sink_batch_refused sink=%s records=%d error=%r note=isolating",
                            self.name, len(records), str(err)[:200])
                mid = len(records) // 2
                self._write_isolating(records[:mid], refused)
                self._write_isolating(records[mid:], refused)
                return
            self._retry_or_give_up(records[0], err, refused)

    def _retry_or_give_up(self, record, err: BaseException, refused: list) -> None:
        backoff = Backoff(self.retry)
        first_failure = time.time()
        attempts = 1
        while attempts < self.retry.max_attempts:
            if self.stop_event.wait(backoff.next_delay()):
                raise Stopped(self.name)
            attempts += 1
            self.metrics.retries.labels(f"{self.name}_write").inc()
            try:
                self._write_retrying([record])
                return
            except Stopped:
                raise
            except Exception as again:  # noqa: BLE001
                err = again
        refused.append((record, err, attempts, first_failure))

    def _dead_letter(self, refused: list) -> None:
        """One letter per source message of the refused records (listing every refused metric of it); a message
        that another sink dead-lettered already is not sent again."""
        if not refused:
            return
        letters: dict = {}
        for record, err, attempts, first_failure in refused:
            src = record.source
            key = id(record) if src is None or src.offset < 0 else (src.topic, src.partition, src.offset)
            metric = getattr(record, "metric", None)
            dead = letters.get(key)
            if dead is None:
                letters[key] = dead = DeadLetter(src, "sink_rejected", self.name, f"{type(err).__name__}: {err}",
                                                 EXHAUSTED, attempts=attempts, metric=metric,
                                                 first_failure_at=first_failure)
            elif metric is not None:
                dead.metric = None  # several metrics of the message: the `metrics` header names them
            if metric is not None:
                dead.refused[metric] = "sink_rejected"
        for dead in letters.values():
            if len(dead.refused) < 2:
                dead.refused.clear()  # one reading: `metric` says it
        batch = list(letters.values())
        log.warning("event=sink_records_refused sink=%s records=%d messages=%d", self.name, len(refused), len(batch))
        retry_call(lambda: self.dead_letters.send(batch, once_per_message=True), operation="dead_letter_send",
                   policy=self.retry, is_transient=lambda e: True, stop=self.stop_event)

    def after_write(self, records: Sequence) -> None:
        """Once readings are durable: latency from MQTT receive and from the device's timestamp."""
        now = time.time()
        e2e = self.metrics.e2e_latency.labels(self.name)
        dev = self.metrics.device_latency.labels(self.name)
        # An evenly spread sample of about 16 readings per write describes the distribution as well as all
        # of them (the Redis sink alone writes 50 times a second at 10,000 readings/s), at a fraction of the
        # cost: two locked histogram observations per sampled reading.
        for r in records[:: max(1, len(records) // 16)]:
            e2e.observe(now - r.received_at)
            dev.observe(max(0.0, now - r.ts))
