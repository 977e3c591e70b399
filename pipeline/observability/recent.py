"""A small bounded memory of recent errors for the dashboard: dead letters and warnings the pipeline logged.

Fed from two places without coupling to them: the dead-letter sink's listeners (once a dead letter is
durable) and a logging handler on the `pipeline` logger (retries, commit failures, crashed threads).
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from typing import Sequence

from ..records import DeadLetter

SAMPLE_CHARS = 200
ERROR_CHARS = 300
_EVENT = re.compile(r"\bevent=(\S+)")


def _text(value: str | bytes, limit: int) -> str:
    if isinstance(value, bytes):
        value = value[: limit * 4].decode("utf-8", "replace")
    return value if len(value) <= limit else value[: limit - 1] + "…"


class RecentErrors:
    """The last `size` errors, newest first; thread-safe, constant memory."""

    def __init__(self, size: int = 50, clock=time.time):
        self._items: deque[dict] = deque(maxlen=size)
        self._lock = threading.Lock()
        self.clock = clock

    def add(self, stage: str, reason: str, error: str, sample: str | bytes = "", kind: str = "error",
            at: float | None = None, **where) -> None:
        item = {"time": at if at is not None else self.clock(), "stage": stage, "reason": reason, "kind": kind,
                "error": _text(error, ERROR_CHARS), "sample": _text(sample, SAMPLE_CHARS), **where}
        with self._lock:
            self._items.append(item)

    def add_dead_letters(self, records: Sequence[DeadLetter]) -> None:
        """Listener for the dead-letter sink: one entry per dead letter, with a sample of its payload."""
        now = self.clock()
        for d in records:
            src = d.source
            self.add(d.stage, d.reason, d.error, src.payload, kind=d.kind, at=now,
                     mqtt_topic=_text(src.mqtt_topic, SAMPLE_CHARS), partition=src.partition, offset=src.offset)

    def items(self, limit: int = 50) -> list[dict]:
        with self._lock:
            items = list(self._items)
        return items[::-1][:limit]


class ErrorLogHandler(logging.Handler):
    """Copies WARNING and ERROR records into RecentErrors; `event=<name>` in the message becomes the reason."""

    def __init__(self, recent: RecentErrors):
        super().__init__(level=logging.WARNING)
        self.recent = recent

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("pipeline.dashboard"):
            return  # the dashboard's own troubles show on the page already; keep this list about the data
        try:
            message = record.getMessage()
            match = _EVENT.search(message)
            stage = record.name.removeprefix("pipeline.")
            self.recent.add(stage, match.group(1) if match else record.levelname.lower(), message,
                            kind=record.levelname.lower(), at=record.created)
        except Exception:  # noqa: BLE001 - a log handler must never raise into the code that logged
            self.handleError(record)
