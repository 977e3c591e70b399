"""Exponential backoff with jitter, bounded by a maximum interval and (optionally) elapsed time."""
from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable, TypeVar

from ..config import RetryConfig

T = TypeVar("T")
log = logging.getLogger(__name__)


class RetryExhausted(Exception):
    """The operation kept failing for longer than the policy allows."""

    def __init__(self, operation: str, attempts: int, last: BaseException):
        super().__init__(f"{operation} failed {attempts} times, last error: {last}")
        self.operation, self.attempts, self.last = operation, attempts, last


class Stopped(Exception):
    """Raised instead of retrying further when the pipeline is shutting down."""


class Backoff:
    """Delays 0.1, 0.2, 0.4 ... up to max_interval, each spread by +-jitter."""

    def __init__(self, policy: RetryConfig, rng: random.Random | None = None):
        self.policy = policy
        self.rng = rng or random.Random()
        self.attempt = 0

    def next_delay(self) -> float:
        p = self.policy
        base = min(p.max_interval_s, p.initial_interval_s * (p.multiplier ** self.attempt))
        self.attempt += 1
        spread = base * p.jitter
        return max(0.0, base + self.rng.uniform(-spread, spread))


def retry_call(fn: Callable[[], T], *, operation: str, policy: RetryConfig, is_transient: Callable[[BaseException], bool],
               stop: threading.Event | None = None, max_elapsed_s: float | None = None,
               on_retry: Callable[[BaseException, int, float], None] | None = None) -> T:
    """Call fn until it succeeds. Transient errors retry for as long as `max_elapsed_s` allows
    (None: until `stop` is set, which is what an outage needs: wait, do not dead-letter).
    Other errors propagate at once."""
    backoff = Backoff(policy)
    started = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - classified right below
            if not is_transient(err):
                raise
            if max_elapsed_s is not None and time.monotonic() - started >= max_elapsed_s:
                raise RetryExhausted(operation, attempts, err) from err
            delay = backoff.next_delay()
            if on_retry:
                on_retry(err, attempts, delay)
            log.warning("event=retry operation=%s attempt=%d delay_s=%.2f error=%r", operation, attempts, delay, str(err)[:200])
            if stop is not None:
                if stop.wait(delay):
                    raise Stopped(operation) from err
            else:
                time.sleep(delay)
