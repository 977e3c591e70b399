"""The generic stage runner: applies pure stages in order and turns their errors into dead letters.

A stage has a `name` and `process(item) -> list` (empty: filtered; raising Invalid: bad input;
raising anything else: a processing failure). Stages never see threads, metrics or Kafka.
A stage may declare `accepts` (a type): other kinds of record pass it unchanged, which is how
readings and log records share one chain.
"""
from __future__ import annotations

import logging
from typing import Any, Protocol, Sequence

from ..observability.metrics import Metrics
from ..records import FAILED, INVALID, DeadLetter, Invalid, RawMessage

log = logging.getLogger(__name__)


class Stage(Protocol):
    name: str

    def process(self, item: Any) -> list: ...


class StageChain:
    """Runs a RawMessage through the stages; returns (outputs, dead_letters)."""

    def __init__(self, stages: Sequence[Stage], metrics: Metrics):
        self.stages = list(stages)
        self.metrics = metrics
        self._out = [metrics.stage_out.labels(s.name) for s in self.stages]
        self._plan = [(s, s.process, getattr(s, "accepts", object)) for s in self.stages]
        # Records out per stage since the last flush_counts(): one locked Prometheus increment per batch
        # and stage instead of one per message and stage.
        self._counts = [0] * len(self.stages)

    def flush_counts(self) -> None:
        """Add the per-stage counts gathered since the last call to the metrics (once per batch)."""
        counts = self._counts
        for i, n in enumerate(counts):
            if n:
                self._out[i].inc(n)
                counts[i] = 0

    def run(self, raw: RawMessage, outputs: list, dead: list) -> None:
        items: list = [raw]
        counts = self._counts
        for i, (stage, process, accepts) in enumerate(self._plan):
            if len(items) == 1:  # the common case, one record: no lists built around the stage's own
                item = items[0]
                if not isinstance(item, accepts):
                    continue
                try:
                    items = process(item)
                except Exception as err:  # noqa: BLE001 - see _failed
                    self._failed(stage, raw, item, err, dead)
                    return
                counts[i] += len(items)
                if not items:
                    return
                continue
            produced: list = []
            passed = 0
            for item in items:
                if not isinstance(item, accepts):
                    produced.append(item)
                    passed += 1
                    continue
                try:
                    produced.extend(process(item))
                except Exception as err:  # noqa: BLE001 - see _failed
                    self._failed(stage, raw, item, err, dead)
            counts[i] += len(produced) - passed
            items = produced
            if not items:
                return
        outputs.extend(items)

    def _failed(self, stage: Stage, raw: RawMessage, item: Any, err: Exception, dead: list) -> None:
        """Invalid input becomes a dead letter with its reason; anything else a stage raises (a bug or a
        surprise) a processing failure: it must not kill the thread."""
        if isinstance(err, Invalid):
            self.metrics.invalid.labels(stage.name, err.reason).inc()
            metric = getattr(item, "metric", None)
            dead.append(DeadLetter(raw, err.reason, stage.name, str(err), INVALID,
                                   metric=metric if isinstance(metric, str) else None))
            return
        log.error("event=stage_failure stage=%s topic=%s", stage.name, raw.mqtt_topic, exc_info=err)
        dead.append(DeadLetter(raw, "processing_error", stage.name, f"{type(err).__name__}: {err}", FAILED))
