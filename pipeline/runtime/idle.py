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


class TtlRefresh:
    """Which Redis keys of active sensors need their TTL set again. An EXPIRE per key and write would add a third
    to the commands of a batch of distinct sensors, so a key's TTL (`ttl_s` plus a tenth) is set again only once a
    tenth of it has passed since it was last set: it expires between `ttl_s` and 1.1 times that after the last
    write. One float per active sensor; sensors whose TTL has run out are pruned every tenth of it."""

    def __init__(self, ttl_s: float):
        self.ttl_s = max(1, round(ttl_s))
        self.refresh_s = self.ttl_s / 10
        self.ttl = round(self.ttl_s + self.refresh_s)  # the seconds to send with EXPIRE
        self._set: dict[str, float] = {}  # sensor -> when its key's TTL was last set
        self._prune_at = 0.0

    def due(self, sensors, now: float) -> list[str]:
        """The sensors whose key's TTL is to be set in this write; `done` once the write succeeded (a failed one
        is retried with its EXPIREs)."""
        noted, after = self._set, now - self.refresh_s
        return [s for s in sensors if noted.get(s, -float("inf")) <= after]

    def done(self, sensors: list[str], now: float) -> None:
        """Their TTL was set at `now`."""
        noted = self._set
        for s in sensors:
            noted[s] = now
        if now >= self._prune_at:
            self._prune_at = now + self.refresh_s
            cutoff = now - self.ttl  # their keys have expired
            self._set = {s: t for s, t in noted.items() if t > cutoff}
