"""Failed token attempts per client address: a token bucket, so guessing DASHBOARD_TOKEN is slowed to a trickle."""
from __future__ import annotations

import threading
import time

# A client may get the token wrong this many times in a row (a typo, a stale browser password) ...
BURST = 10
# ... and one more time per WINDOW_S / BURST seconds after that: 10 a minute, not thousands a second.
WINDOW_S = 60.0
# Addresses remembered at most: past it the longest-known ones are forgotten (memory stays bounded in a flood).
MAX_CLIENTS = 10000


class FailureThrottle:
    """Per address: `burst` failures allowed, refilled at burst/window_s a second; thread-safe."""

    def __init__(self, burst: int = BURST, window_s: float = WINDOW_S, max_clients: int = MAX_CLIENTS,
                 clock=time.monotonic):
        self.burst = float(burst)
        self.rate = burst / window_s  # failures forgiven per second
        self.max_clients = max_clients
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (failures left, when counted)

    def _left(self, address: str, now: float) -> float:
        left, at = self._buckets.get(address, (self.burst, now))
        return min(self.burst, left + (now - at) * self.rate)

    def retry_after(self, address: str) -> float:
        """0 when `address` may try the token now, else the seconds until it may try again."""
        with self._lock:
            left = self._left(address, self.clock())
        return 0.0 if left >= 1.0 else (1.0 - left) / self.rate

    def failed(self, address: str) -> float:
        """Count a wrong token from `address`; returns retry_after as it stands after this failure."""
        with self._lock:
            now = self.clock()
            left = self._left(address, now) - 1.0
            self._buckets.pop(address, None)  # re-inserted last: the dict's order is the eviction order
            self._buckets[address] = (left, now)
            if len(self._buckets) > self.max_clients:
                self._evict(now)
        return 0.0 if left >= 1.0 else (1.0 - left) / self.rate

    def _evict(self, now: float) -> None:
        """Forget refilled buckets first (they hold nothing), then the longest-known addresses."""
        for address in [a for a in self._buckets if self._left(a, now) >= self.burst]:
            del self._buckets[address]
        while len(self._buckets) > self.max_clients:
            del self._buckets[next(iter(self._buckets))]
