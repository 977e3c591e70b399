"""When the owners of per-series state look for idle series (limits.state_idle_s).

Each owner (the limits registry, the window aggregator, the alert evaluator, the PostgreSQL sink) has an
`evict_idle(now)` method; its runner asks an IdleSweep on its existing tick whether a sweep is due. A sweep
walks that owner's series once, so it runs every SWEEP_FRACTION of the idle time, or every minute if that is
sooner: a series is released between state_idle_s and state_idle_s plus that much (and a tick) after its last
reading.
"""
from __future__ import annotations

SWEEP_FRACTION = 0.1
MAX_SWEEP_EVERY_S = 60.0


class IdleSweep:
    """`due(now)` is True at most every `every` seconds of the caller's clock (the first call starts it)."""

    def __init__(self, idle_s: float):
        self.idle_s = idle_s
        self.every = min(MAX_SWEEP_EVERY_S, idle_s * SWEEP_FRACTION)
        self._next: float | None = None

    @property
    def next_at(self) -> float:
        """When `due` will next say True (-inf before its first call)."""
        return -float("inf") if self._next is None else self._next

    def due(self, now: float) -> bool:
        if self._next is None:
            self._next = now + self.every
            return False
        if now < self._next:
            return False
        self._next = now + self.every
        return True
