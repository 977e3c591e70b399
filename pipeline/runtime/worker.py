"""Worker threads that never swallow an error: a crash is stored and surfaced by the supervisor."""
from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)


class Failures:
    """Where threads (and library callbacks) put exceptions they could not handle."""

    def __init__(self):
        self._lock = threading.Lock()
        self.errors: list[tuple[str, BaseException]] = []
        self.event = threading.Event()

    def report(self, where: str, err: BaseException) -> None:
        with self._lock:
            self.errors.append((where, err))
        self.event.set()

    def first(self) -> tuple[str, BaseException] | None:
        with self._lock:
            return self.errors[0] if self.errors else None


class Worker(threading.Thread):
    """A named daemon thread running `target()`; an exception is reported, never lost."""

    def __init__(self, name: str, target: Callable[[], None], failures: Failures):
        super().__init__(name=name, daemon=True)
        self._target_fn = target
        self.failures = failures

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as err:  # noqa: BLE001 - reported to the supervisor, which exits non-zero
            log.exception("event=thread_crashed thread=%s", self.name)
            self.failures.report(self.name, err)
