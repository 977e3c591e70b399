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
        for i, stage in enumerate(self.stages):
            produced: list = []
            process = stage.process
            accepts = getattr(stage, "accepts", object)
            passed = 0
            for item in items:
                if not isinstance(item, accepts):
                    produced.append(item)
                    passed += 1
                    continue
                try:
                    produced.extend(process(item))
                except Invalid as err:
                    self.metrics.invalid.labels(stage.name, err.reason).inc()
                    metric = getattr(item, "metric", None)
                    dead.append(DeadLetter(raw, err.reason, stage.name, str(err), INVALID,
                                           metric=metric if isinstance(metric, str) else None))
                except Exception as err:  # noqa: BLE001 - a bug or surprise in a stage must not kill the thread
                    log.exception("event=stage_failure stage=%s topic=%s", stage.name, raw.mqtt_topic)
                    dead.append(DeadLetter(raw, "processing_error", stage.name, f"{type(err).__name__}: {err}", FAILED))
            counts[i] += len(produced) - passed
            items = produced
            if not items:
                return
        outputs.extend(items)
