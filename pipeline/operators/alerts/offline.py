"""The offline timer: which sensors have been silent past their limit, in O(due) per tick.

A heap holds at most one deadline per tracked sensor (its last reading plus its limit, as of when the
entry was pushed); a reading only updates the sensor's last-seen time. A tick pops the deadlines that have
passed: a sensor that reported since is pushed again with its new deadline, one still silent is due. So a
tick costs the number of deadlines that passed, not the number of sensors.

A due sensor leaves the timer: its `offline` alert opens (or is already open) and stays open until a reading
resolves it, and that reading tracks the sensor again. So 100,000 one-shot ids cost one pop each, once,
instead of a walk over all of them on every tick. Pure: the caller passes `now` and the limit of each sensor.
"""
from __future__ import annotations

import heapq
from typing import Callable, Iterable


class OfflineTimer:
    """Last-seen times of the sensors watched for silence, and their deadlines in a heap."""

    def __init__(self, limit_of: Callable[[str], float]):
        self.limit_of = limit_of  # seconds of silence before a sensor is offline (0: never)
        self.last_seen: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._scheduled: set[str] = set()  # sensors with an entry in the heap

    def __len__(self) -> int:
        return len(self.last_seen)

    def __contains__(self, sensor_id: str) -> bool:
        return sensor_id in self.last_seen

    def seen(self, sensor_id: str, now: float) -> None:
        """A reading of the sensor (or the start-up load): its silence starts again from `now`."""
        self.last_seen[sensor_id] = now
        if sensor_id not in self._scheduled:
            self._schedule(sensor_id, now)

    def _schedule(self, sensor_id: str, seen: float) -> None:
        limit = self.limit_of(sensor_id)
        if limit > 0:
            heapq.heappush(self._heap, (seen + limit, sensor_id))
            self._scheduled.add(sensor_id)

    def due(self, now: float) -> list[tuple[str, float]]:
        """(sensor, seconds silent) of the sensors silent past their limit by `now`; they leave the timer."""
        heap, out = self._heap, []
        while heap and heap[0][0] < now:
            _deadline, sensor_id = heapq.heappop(heap)
            self._scheduled.discard(sensor_id)
            seen = self.last_seen.get(sensor_id)
            if seen is None:
                continue  # forgotten since it was pushed
            limit = self.limit_of(sensor_id)
            if limit <= 0:
                continue  # no longer watched (a reload); tracked again by its next reading
            if now - seen > limit:
                del self.last_seen[sensor_id]
                out.append((sensor_id, now - seen))
            else:
                self._schedule(sensor_id, seen)
        return out

    def forget(self, sensors: Iterable[str]) -> None:
        """Stop watching these sensors (their heap entries are skipped when they come up)."""
        before = len(self.last_seen)
        for s in sensors:
            self.last_seen.pop(s, None)
        if before - len(self.last_seen) > len(self.last_seen):
            self.last_seen = dict(self.last_seen)  # a dict keeps its table when emptied: copied, it frees the memory

    def evict_idle(self, cutoff: float) -> int:
        """Drop sensors seen before `cutoff` that have no deadline (their limit is 0: never offline)."""
        gone = [s for s, seen in self.last_seen.items() if seen < cutoff and s not in self._scheduled]
        self.forget(gone)
        return len(gone)

    def reschedule(self) -> None:
        """The limits changed (a reload): every watched sensor's deadline again, O(n) once."""
        self._heap, self._scheduled = [], set()
        for sensor_id, seen in self.last_seen.items():
            limit = self.limit_of(sensor_id)
            if limit > 0:
                self._heap.append((seen + limit, sensor_id))
                self._scheduled.add(sensor_id)
        heapq.heapify(self._heap)
