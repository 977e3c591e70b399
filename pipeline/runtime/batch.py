"""A batch of processed records on its way to the sinks, and the in-order commit tracker.

Kafka offsets may be committed only once every sink holds the batch. Sinks finish batches in any
order, so the tracker commits the longest completed prefix, partition by partition.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Protocol

from ..records import DeadLetter, LogRecord, Reading, SensorOffline


def split_outputs(outputs: list, offline: list | None = None) -> tuple[list[Reading], list[LogRecord]]:
    """Chain outputs by kind: readings, and log records (each sink selects the kind it writes); sensors declared
    offline (SensorOffline, a format operator's) go to `offline` if given, else are left out."""
    readings: list = []
    logs: list = []
    for item in outputs:
        cls = item.__class__
        if cls is LogRecord:
            logs.append(item)
        elif cls is SensorOffline:
            if offline is not None:
                offline.append(item)
        else:
            readings.append(item)
    return readings, logs


class Batch:
    """Records from one consume call plus the offsets to commit once all `sinks` (the durable ones) are done."""

    __slots__ = ("readings", "dead", "offsets", "_pending", "_lock", "done", "created", "logs", "offline")

    def __init__(self, readings: list[Reading], dead: list[DeadLetter], offsets: dict[tuple[str, int], int], sinks: int,
                 logs: list[LogRecord] | None = None, offline: list[SensorOffline] | None = None):
        self.readings = readings
        self.logs = logs if logs is not None else []
        # Sensors that said they are gone (a Sparkplug death), in message order: the alert operator's.
        self.offline = offline if offline is not None else []
        self.dead = dead
        self.offsets = offsets  # (topic, partition) -> next offset to read
        self._pending = sinks
        self._lock = threading.Lock()
        self.done = threading.Event()
        self.created = time.monotonic()
        if sinks == 0:
            self.done.set()

    def sink_done(self) -> None:
        with self._lock:
            self._pending -= 1
            finished = self._pending == 0
        if finished:
            self.done.set()


class InFlight:
    """Batches handed to sinks, oldest first; `completed()` pops the finished prefix's offsets."""

    def __init__(self):
        self._batches: deque[Batch] = deque()
        self._lock = threading.Lock()

    def add(self, batch: Batch) -> None:
        with self._lock:
            self._batches.append(batch)

    def __len__(self) -> int:
        return len(self._batches)

    def completed(self) -> dict[tuple[str, int], int]:
        offsets: dict[tuple[str, int], int] = {}
        with self._lock:
            while self._batches and self._batches[0].done.is_set():
                offsets.update(self._batches.popleft().offsets)
        return offsets

    def wait_all(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            batches = list(self._batches)
        for b in batches:
            if not b.done.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def drop(self) -> None:
        """Forget everything in flight (after a revoke whose batches could not finish in time)."""
        with self._lock:
            self._batches.clear()


class BatchConsumer(Protocol):
    """What the consumer hands batches to (a sink or an operator's runner), defined here so ingest needs no sink."""

    name: str
    durable: bool

    def offer(self, batch: Batch, timeout: float | None = None) -> bool: ...

    def partitions_assigned(self, partitions: set[int]) -> None: ...

    def partitions_revoked(self, partitions: set[int]) -> None: ...
