"""The generic stage runner: applies pure stages in order and turns their errors into dead letters.

A stage has a `name` and `process(item) -> list` (empty: filtered; raising Invalid: bad input;
raising anything else: a processing failure). Stages never see threads, metrics or Kafka.
A stage may declare `accepts` (a type): other kinds of record pass it unchanged, which is how
readings and log records share one chain.

The refusals of one message become one dead letter (per kind), listing the refused metrics: a message
with 100 bad readings is one letter, not 100 copies of its payload. Its valid readings go on.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
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
        refusals: list[Refusal] = []
        outputs.extend(self._apply(raw, refusals))
        if refusals:
            dead.extend(merge_refusals(raw, refusals))

    def _apply(self, raw: RawMessage, refusals: list) -> list:
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
                    self._failed(stage, raw, item, err, refusals)
                    return []
                counts[i] += len(items)
                if not items:
                    return []
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
                    self._failed(stage, raw, item, err, refusals)
            counts[i] += len(produced) - passed
            items = produced
            if not items:
                return []
        return items

    def _failed(self, stage: Stage, raw: RawMessage, item: Any, err: Exception, refusals: list) -> None:
        """Invalid input is refused with its reason; anything else a stage raises (a bug or a surprise) is a
        processing failure: it must not kill the thread. Counted per refused record."""
        metric = getattr(item, "metric", None)
        metric = metric if isinstance(metric, str) else None
        if isinstance(err, Invalid):
            self.metrics.invalid.labels(stage.name, err.reason).inc()
            refusals.append(Refusal(stage.name, err.reason, str(err), INVALID, metric))
            return
        log.error("event=stage_failure stage=%s topic=%s", stage.name, raw.mqtt_topic, exc_info=err)
        refusals.append(Refusal(stage.name, "processing_error", f"{type(err).__name__}: {err}", FAILED, metric))


@dataclass(slots=True)
class Refusal:
    """One record of a message that a stage refused or failed on."""

    stage: str
    reason: str
    error: str
    kind: str
    metric: str | None = None


def merge_refusals(raw: RawMessage, refusals: Sequence[Refusal]) -> list[DeadLetter]:
    """One dead letter per message and kind (invalid input and processing failures have their own topics),
    listing every refused metric with its reason. `reason` is the most common reason (the earliest among
    equals) and `stage` the stage that gave it, so consumers that read only those headers still work."""
    by_kind: dict[str, list[Refusal]] = {}
    for r in refusals:
        by_kind.setdefault(r.kind, []).append(r)
    letters = []
    for kind, group in by_kind.items():
        counts = Counter(r.reason for r in group)
        main = max(counts, key=counts.__getitem__)  # the first of equals: a Counter keeps insertion order
        first = next(r for r in group if r.reason == main)
        if len(group) == 1:
            error = first.error
        else:
            error = f"{len(group)} records refused; " + "; ".join(f"{r.metric or '-'}: {r.error}" for r in group)
        letters.append(DeadLetter(raw, main, first.stage, error, kind, metric=first.metric if len(group) == 1 else None,
                                  refused={r.metric: r.reason for r in group if r.metric is not None}))
    return letters
