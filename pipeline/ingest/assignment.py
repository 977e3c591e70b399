"""Group mode's watchdog: tells a consumer that waits for partitions in vain from one that is idle.

A group member without partitions is normal for a moment (the group is joining) and for good when other
instances hold every partition. It is a stall when messages wait and nobody consumes them: no partition
here for `timeout_s`, uncommitted messages on the topic, and the group's committed offsets standing still
between two checks. Some brokers leave a group wedged for good after a member died during its own
shutdown; this is how that shows up, instead of a green dashboard over a growing lag.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stall:
    """What the watchdog saw when it decided the consumer is stuck."""

    unassigned_s: float
    lag: int


class AssignmentWatchdog:
    """Pure decision core: the consumer thread feeds it observations, it says when to look and what it means."""

    def __init__(self, timeout_s: float, check_interval_s: float | None = None):
        self.timeout_s = timeout_s
        self.check_interval_s = check_interval_s or min(5.0, timeout_s / 2)
        self._unassigned_since: float | None = None
        self._next_check = 0.0
        self._last_committed: int | None = None
        self.stall: Stall | None = None

    def assignment(self, now: float, has_partitions: bool) -> None:
        """The consumer's assignment changed (or was confirmed)."""
        if has_partitions:
            self._unassigned_since = None
            self._last_committed = None
            self.stall = None
        elif self._unassigned_since is None:
            self._unassigned_since = now
            self._next_check = now + self.check_interval_s

    def due(self, now: float) -> bool:
        """Whether the caller should look up lag and committed offsets now (only while unassigned)."""
        return self._unassigned_since is not None and now >= self._next_check

    def observe(self, now: float, lag: int, committed_total: int) -> Stall | None:
        """One look at the topic: messages not committed by the group, and the sum of its committed offsets."""
        self._next_check = now + self.check_interval_s
        moving = self._last_committed is not None and committed_total != self._last_committed
        first_look = self._last_committed is None
        self._last_committed = committed_total
        since = self._unassigned_since
        if since is None:
            return None
        waited = now - since
        if lag > 0 and not moving and not first_look and waited >= self.timeout_s:
            self.stall = Stall(round(waited, 1), lag)
        elif lag == 0 or moving:
            self.stall = None
        return self.stall
