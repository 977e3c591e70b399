"""One overall shutdown deadline, and running a call that may block for longer than it allows.

Library calls such as librdkafka's consumer close or a synchronous commit take no timeout and can wait
for a frozen broker indefinitely. `call_bounded` runs such a call in a helper thread and stops waiting
for it at its timeout: the call is abandoned, not interrupted, so it may still finish later; a daemon
thread never keeps the process alive.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)


class Deadline:
    """A point in monotonic time; each step of a shutdown takes its timeout from what is left."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.at = clock() + seconds

    def left(self, reserve: float = 0.0) -> float:
        """Seconds until the deadline, less `reserve` (kept for later steps); never negative."""
        return max(0.0, self.at - reserve - self.clock())


def call_bounded(name: str, fn: Callable[[], object], timeout: float) -> bool:
    """Run `fn` in a helper thread, waiting at most `timeout` seconds. True if it returned in time;
    False if it raised (logged) or is still running (abandoned, logged)."""
    failed: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as err:  # noqa: BLE001 - reported through the return value and the log
            failed.append(err)

    helper = threading.Thread(target=target, name=f"bounded-{name}", daemon=True)
    started = time.monotonic()
    helper.start()
    helper.join(max(0.0, timeout))
    if helper.is_alive():
        log.warning("event=shutdown_step_abandoned step=%s timeout_s=%.1f", name, timeout)
        return False
    if failed:
        log.warning("event=shutdown_step_failed step=%s error=%r", name, str(failed[0])[:200])
        return False
    log.debug("event=shutdown_step_done step=%s took_s=%.2f", name, time.monotonic() - started)
    return True
