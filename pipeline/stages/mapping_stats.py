"""Per-mapping statistics (config `sources:`): what each mapping took, made of it, skipped and refused.

One `MappingStats` is owned by the decode stage of the main chain; the engine counts through each mapping's
`MappingCounts` methods, the dashboard reads `snapshot()` (through the pipeline's status), Prometheus the counters
declared in pipeline/observability/metrics.py. Counting happens on the consumer thread only; a snapshot taken on
another thread may be a message behind, never torn (the last refusal is replaced whole).
"""
from __future__ import annotations

import time
from collections import deque
from typing import Callable

from ..observability.metrics import Metrics

SAMPLE_BYTES = 300  # of a refused payload kept for the dashboard
RATE_WINDOW_S = 60.0


class MappingCounts:
    """One mapping's counts; the engine calls its methods once per message."""

    __slots__ = ("name", "topic", "encoding", "messages", "readings", "text_skipped", "ignored", "refused",
                 "readings_refused", "last_refused", "_prom", "_samples", "_clock")

    def __init__(self, name: str, topic: str, encoding: str, metrics: Metrics | None, clock: Callable[[], float]):
        self.name, self.topic, self.encoding = name, topic, encoding
        self.messages = self.readings = self.text_skipped = self.ignored = self.refused = self.readings_refused = 0
        self.last_refused: dict | None = None
        self._clock = clock
        self._samples: deque = deque(maxlen=64)  # (time, messages) at each snapshot: the rate's window
        self._prom = None
        if metrics is not None:
            by_outcome = metrics.mapping_messages
            self._prom = (by_outcome.labels(name, "decoded"), by_outcome.labels(name, "refused"),
                          by_outcome.labels(name, "ignored"), metrics.mapping_readings.labels(name),
                          metrics.mapping_text_skipped.labels(name), metrics.mapping_readings_refused.labels(name))

    def decoded(self, readings: int, text_skipped: int) -> None:
        """A message that fit: how many readings it gave and how many text values were skipped."""
        self.messages += 1
        self.readings += readings
        if text_skipped:
            self.text_skipped += text_skipped
        if self._prom is not None:
            self._prom[0].inc()
            if readings:
                self._prom[3].inc(readings)
            if text_skipped:
                self._prom[4].inc(text_skipped)

    def ignored_topic(self) -> None:
        """A message on one of the mapping's `ignore` topics."""
        self.ignored += 1
        if self._prom is not None:
            self._prom[2].inc()

    def refused_message(self, reason: str, detail: str, topic: str, payload: bytes) -> None:
        """A message that did not fit: kept as the last refused sample, with its reason."""
        self.messages += 1
        self.refused += 1
        self._keep(reason, detail, topic, payload)
        if self._prom is not None:
            self._prom[1].inc()

    def refused_reading(self, reason: str, detail: str, topic: str, payload: bytes) -> None:
        """A reading the mapping made that validation refused (a name too long, a time too old): the message
        fit, the reading did not; kept as the last refused sample too."""
        self.readings_refused += 1
        self._keep(reason, detail, topic, payload)
        if self._prom is not None:
            self._prom[5].inc()

    def _keep(self, reason: str, detail: str, topic: str, payload: bytes) -> None:
        self.last_refused = {"at": self._clock(), "topic": topic[:200], "reason": reason, "error": detail[:500],
                             "payload": payload[:SAMPLE_BYTES].decode("utf-8", "replace"),
                             "payload_bytes": len(payload)}

    def snapshot(self) -> dict:
        """The counts, readings per message and the message rate over about the last minute."""
        now, messages = self._clock(), self.messages
        self._samples.append((now, messages))
        while len(self._samples) > 1 and now - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()
        t0, m0 = self._samples[0]
        fit = messages - self.refused
        return {"name": self.name, "topic": self.topic, "encoding": self.encoding, "messages": messages,
                "readings": self.readings, "readings_per_message": round(self.readings / fit, 2) if fit else None,
                "rate_per_s": round((messages - m0) / (now - t0), 3) if now > t0 else None,
                "text_skipped": self.text_skipped, "ignored": self.ignored, "refused": self.refused,
                "readings_refused": self.readings_refused,
                "last_refused": self.last_refused}


class MappingStats:
    """Every configured mapping's counts, by name, in config order."""

    def __init__(self, metrics: Metrics | None = None, clock: Callable[[], float] = time.time):
        self.metrics = metrics
        self.clock = clock
        self._by_name: dict[str, MappingCounts] = {}

    def counts(self, name: str, topic: str = "", encoding: str = "") -> MappingCounts:
        """The counts of mapping `name` (made on first use)."""
        found = self._by_name.get(name)
        if found is None:
            found = self._by_name[name] = MappingCounts(name, topic, encoding, self.metrics, self.clock)
        return found

    def snapshot(self) -> list[dict]:
        """Every mapping's counts (the dashboard's Mappings panel, `GET /api/mappings`)."""
        return [c.snapshot() for c in list(self._by_name.values())]
