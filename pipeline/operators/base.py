"""A stateful operator and the one runner that runs them: operators compute, the runner does the concurrency.

An operator (`Operator`) takes each batch once, on arrival (`take`: judge, count, fold into state; it returns
what it wants stored), stores that output (`write`, retried by the runner while the store is away or refusing),
hears that it became durable (`durable`), does timed work (`tick`, every `tick_interval_s`) and follows the
consumer group's partitions (`partitions_assigned` / `partitions_revoked`, called in the consumer thread).

`OperatorRunner` gives it a thread, a bounded queue, the hold on transient store errors (shown as blocked,
pipeline_sink_blocked), metrics and the commit bookkeeping of pipeline/runtime/batching.py: a batch's Kafka offsets
are committed only once the operator stored what it made of it, exactly as for a sink (the Kafka source
counts the runner among the batch's holders, pipeline/runtime/batch.py). The operator itself starts no
thread; for work it retries itself (a tick's store) it uses `retrying`, which ends at `stop()`.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Sequence, TypeVar

from ..clients.errors import is_transient
from ..config import RetryConfig, SinkConfig
from ..observability.metrics import Metrics
from ..runtime.batch import Batch
from ..runtime.retry import retry_call
from ..runtime.batching import BatchingRunner

log = logging.getLogger(__name__)
T = TypeVar("T")


class Operator:
    """Base class of stateful operators; subclasses set `name` and override the hooks they need."""

    name = "operator"
    # Seconds between calls of `tick()` in the runner's thread; None: never.
    tick_interval_s: float | None = None

    def __init__(self, retry: RetryConfig, metrics: Metrics):
        self.retry = retry
        self.metrics = metrics
        self.stop_event = threading.Event()  # set by `stop()`: retries end, what is not stored stays uncommitted

    def start(self) -> None:
        """Connect and load state; called before the runner's thread starts."""

    def take(self, batch: Batch) -> Sequence:
        """A batch arrived (once per batch, even if its store is retried): the records to store."""
        return ()

    def write(self, out: Sequence) -> None:
        """Make `out` durable; a transient error is retried by the runner (the batch is held meanwhile)."""

    def durable(self, out: Sequence) -> None:
        """`out` is stored (metrics, logs)."""

    def tick(self) -> None:
        """Timed work, in the runner's thread."""

    def partitions_assigned(self, partitions: set[int]) -> None:
        """The consumer group gave this instance these raw-topic partitions (the full assignment)."""

    def partitions_revoked(self, partitions: set[int]) -> None:
        """These partitions go to another instance."""

    def stop(self) -> None:
        """Time is up: stop retrying."""
        self.stop_event.set()

    def close(self) -> None:
        """Release connections; called after the runner's thread ended."""

    def is_transient(self, err: BaseException) -> bool:
        """The store is away or refusing the service (retry until it takes it), not refusing a record."""
        return is_transient(err)

    def retrying(self, fn: Callable[[], T], operation: str) -> T:
        """Call fn until it succeeds, retrying transient errors until `stop()` (then runtime.retry.Stopped)."""
        return retry_call(fn, operation=operation, policy=self.retry, is_transient=self.is_transient,
                          stop=self.stop_event, on_retry=lambda *_: self.metrics.retries.labels(operation).inc())


class OperatorRunner(BatchingRunner):
    """Runs one operator in its own thread, with the batching sink's queue, holds, retries and metrics."""

    def __init__(self, operator: Operator, settings: SinkConfig, retry: RetryConfig, metrics: Metrics,
                 queue_max_batches: int, dead_letters=None):
        super().__init__(settings, retry, metrics, queue_max_batches, dead_letters=dead_letters)
        self.operator = operator
        self.name = operator.name
        self.tick_interval_s = operator.tick_interval_s

    def start(self) -> None:
        self.operator.start()

    def select(self, batch: Batch) -> Sequence:
        return self.operator.take(batch)

    def write(self, records: Sequence) -> None:
        self.operator.write(records)

    def after_write(self, records: Sequence) -> None:
        self.operator.durable(records)

    def is_transient(self, err: BaseException) -> bool:
        return self.operator.is_transient(err)

    def tick(self) -> None:
        self.operator.tick()

    def partitions_assigned(self, partitions: set[int]) -> None:
        self.operator.partitions_assigned(partitions)

    def partitions_revoked(self, partitions: set[int]) -> None:
        self.operator.partitions_revoked(partitions)

    def stop(self) -> None:
        super().stop()
        self.operator.stop()

    def close(self) -> None:
        self.operator.close()
