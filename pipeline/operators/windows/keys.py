"""The pending (sensor, metric) keys of one window, held per sensor: no object per series.

A window of 50,000 series held a (sensor, metric) tuple per series. A day's window stays pending until midnight,
so after a flood of new series those tuples (made among the flood's transient objects) kept most of pymalloc's
arenas from going back to the system (bench/RESULTS.md). Here a window holds one dict per sensor, its metrics as
keys (interned names): a series costs a dict entry, a sensor one small object.
"""
from __future__ import annotations

import sys
from itertools import islice
from typing import Iterable, Iterator


class PendingKeys:
    """A window's pending keys: an ordered set of (sensor_id, metric), stored as sensor -> {metric: None}.
    Iteration goes sensor by sensor, each sensor's metrics in the order they became pending."""

    __slots__ = ("by_sensor", "count")

    def __init__(self, keys: Iterable[tuple[str, str]] = ()):
        self.by_sensor: dict[str, dict[str, None]] = {}
        self.count = 0
        for sensor_id, metric in keys:
            self.add(sensor_id, metric)

    def add(self, sensor_id: str, metric: str) -> bool:
        """Hold the key; True if it was new."""
        metrics = self.by_sensor.get(sensor_id)
        if metrics is None:
            # One string per sensor id and metric name, whichever object the caller had (a row read back from
            # PostgreSQL is a string of its own).
            metrics = self.by_sensor[sys.intern(sensor_id)] = {}
        elif metric in metrics:
            return False
        metrics[sys.intern(metric)] = None
        self.count += 1
        return True

    def discard(self, sensor_id: str, metric: str) -> None:
        metrics = self.by_sensor.get(sensor_id)
        if metrics is not None and metric in metrics:
            del metrics[metric]
            self.count -= 1
            if not metrics:
                del self.by_sensor[sensor_id]

    def first(self, n: int) -> frozenset[tuple[str, str]]:
        """The first n keys (all of them if n is at least their count)."""
        return frozenset(self if n >= self.count else islice(self, n))

    def copy(self) -> "PendingKeys":
        """The same keys in new containers (made again after a flood, out of its arenas: tracker.rebuild)."""
        new = PendingKeys()
        new.by_sensor = {sensor_id: dict(metrics) for sensor_id, metrics in self.by_sensor.items()}
        new.count = self.count
        return new

    def __contains__(self, key: tuple[str, str]) -> bool:
        metrics = self.by_sensor.get(key[0])
        return metrics is not None and key[1] in metrics

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for sensor_id, metrics in self.by_sensor.items():
            for metric in metrics:
                yield sensor_id, metric

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0
