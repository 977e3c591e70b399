"""A hand-off queue bounded by the records it holds, not by how many batches carry them.

A sink's queue used to hold 16 batches whatever their size. The consumer's batches follow the rate: 1,000
messages each at 10,000 msg/s, 30-120 at 1,000-6,000 msg/s. So at medium rates 16 batches were 0.1-0.3 s of
readings, and one slow PostgreSQL commit (0.5-1 s now and then) filled the PostgreSQL sink's queue. The
consumer then paused every partition, and the Redis path, which had nothing to wait for, waited too: the p99
to Redis at 6,000 msg/s jumped from ~140 ms to 0.5-2 s in the runs that met such a commit (bench/RESULTS.md).
Counted in records, the bound is the same memory as 16 full batches at any rate, and a slow commit at a
medium rate is absorbed instead of passed on.

The queue counts batches again (`by_batches`: no more than `max_batches`, as before) in two cases, set by its
sink: while the store is away or refusing, since buffering does not help a store that takes nothing, Kafka keeps
what is not consumed, and the consumer should pause at once; and for a best-effort sink, which has a consumer
of its own (pipeline/ingest/sink_feed.py), so its back-pressure stops nobody else.

Built on queue.Queue's documented subclass hooks (_init, _qsize, _put, _get: "Override these methods to
implement other queue organizations", called with the queue's lock held), so put/get/timeouts/task
accounting are the standard library's. qsize() and maxsize are in records; `batches()` counts items.
"""
from __future__ import annotations

import queue
from collections import deque
from typing import Any, Callable


class RecordQueue(queue.Queue):
    """put() waits while the records held reach `max_records`; an item is admitted whole, so the queue may
    exceed the bound by one item (a batch is never split). `weigh(item)` gives an item's records (at least 1).
    While `by_batches`, each item counts as at least max_records / max_batches, so max_batches items fill it."""

    def __init__(self, max_records: int, max_batches: int, weigh: Callable[[Any], int]):
        self._weigh = weigh
        self._per_batch = max(1, max_records // max_batches)
        self.by_batches = False  # set and cleared by the sink (its store refuses, or it is best-effort)
        super().__init__(maxsize=max_records)

    def _init(self, maxsize: int) -> None:
        self.queue: deque = deque()
        self._records = 0

    def _qsize(self) -> int:
        if self.by_batches:
            return max(self._records, len(self.queue) * self._per_batch)
        return self._records

    def _put(self, item) -> None:
        weight = max(1, self._weigh(item))
        self.queue.append((item, weight))
        self._records += weight

    def _get(self):
        item, weight = self.queue.popleft()
        self._records -= weight
        return item

    def batches(self) -> int:
        """Items held (a len() of a deque: safe without the lock)."""
        return len(self.queue)
