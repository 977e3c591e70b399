"""The generic stage runner: applies pure stages in order to a batch of messages and turns their refusals into
dead letters.

Each stage gets the batch's records it accepts at once (`process_batch`, pipeline/runtime/stage.py; a stage written
per record is looped by RecordStage, or here when it has only `process`) and returns the records that go on.
Records a stage does not accept pass it unchanged, in place: outputs stay in the order of their messages
(one device's readings in the order sent). A stage that raises on the whole batch is run again one record at a
time, so one bad record cannot fail the others.

The refusals of one message become one dead letter (per kind), listing the refused metrics: a message
with 100 bad readings is one letter, not 100 copies of its payload. Its valid readings go on. Dead letters
come in the order of their messages.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Any, Sequence

from ..observability.metrics import Metrics
from ..records import FAILED, INVALID, DeadLetter, Invalid, RawMessage
from .stage import Refused, Stage, per_record

log = logging.getLogger(__name__)

__all__ = ["Refusal", "Refused", "Stage", "StageChain", "merge_refusals"]

# The message of a refused record that names none (a stage built a record without `.source`): its letter still
# goes out, under an empty position.
UNKNOWN_SOURCE = RawMessage("", b"", 0.0)
ALL, NONE, SOME = "all", "none", "some"


class StageChain:
    """Runs a batch of RawMessages through the stages; returns (outputs, dead_letters)."""

    def __init__(self, stages: Sequence[Stage], metrics: Metrics):
        self.stages = list(stages)
        self.metrics = metrics
        self._out = [metrics.stage_out.labels(s.name) for s in self.stages]
        self._plan = [(s, _batch_of(s), getattr(s, "accepts", object)) for s in self.stages]
        # Per stage, the record types it takes and those it passes, learnt as they come.
        self._kinds: list[tuple[set, set]] = [(set(), set()) for _ in self.stages]
        # Records out per stage since the last flush_counts(): one locked Prometheus increment per batch
        # and stage.
        self._counts = [0] * len(self.stages)
        # Stages whose decoders skip values (the decode stage's `values_skipped`, format -> count): added per batch.
        self._skipping = [s for s in self.stages if isinstance(getattr(s, "values_skipped", None), dict)]
        # Stages with timed work to do while no message comes (`idle(now)`): the limits' release of idle sensors.
        self._idle = [s for s in self.stages if callable(getattr(s, "idle", None))]

    def idle(self, now: float) -> None:
        """The consumer's poll returned nothing: let the stages that keep state do their timed work (in the
        consumer thread, as everything of the chain)."""
        for stage in self._idle:
            stage.idle(now)

    def flush_counts(self) -> None:
        """Add the per-stage counts gathered since the last call to the metrics (once per batch)."""
        counts = self._counts
        for i, n in enumerate(counts):
            if n:
                self._out[i].inc(n)
                counts[i] = 0
        for stage in self._skipping:
            tally = stage.values_skipped
            if tally:
                for fmt, n in list(tally.items()):
                    self.metrics.format_values_skipped.labels(fmt).inc(n)
                tally.clear()

    def run(self, raw: RawMessage, outputs: list, dead: list) -> None:
        """One message (tests, tools): a batch of one."""
        out, letters = self.run_batch([raw])
        outputs += out
        dead += letters

    def run_batch(self, raws: list[RawMessage]) -> tuple[list, list[DeadLetter]]:
        """The records the messages became, in message order, and the dead letters of their refusals."""
        items: list = raws
        refused = Refused()
        refusals: list[tuple[RawMessage, Refusal]] = []
        counts = self._counts
        kinds: set | None = None  # the types of `items`, found once per list (a stage passed over keeps it)
        for i, (stage, batch, accepts) in enumerate(self._plan):
            if not items:
                break
            if accepts is object:
                share = ALL
            else:
                if kinds is None:
                    kinds = set(map(type, items))
                share = self._share(i, accepts, kinds)
            if share is ALL:
                items = self._call(stage, batch, items, refused)
                counts[i] += len(items)
            elif share is SOME:
                items = self._mixed(i, stage, batch, items, refused)
            else:
                continue
            kinds = None
            if refused.entries:
                self._refusals(stage, refused, raws, refusals)
        return items, (self._letters(raws, refusals) if refusals else [])

    def _share(self, i: int, accepts: type, kinds: set) -> str:
        """Whether stage `i` takes ALL, NONE or SOME of records of these types (each type learnt once)."""
        takes, passes = self._kinds[i]
        if kinds <= takes:
            return ALL
        if kinds <= passes:
            return NONE
        for kind in kinds - takes - passes:
            (takes if issubclass(kind, accepts) else passes).add(kind)
        return ALL if kinds <= takes else NONE if kinds <= passes else SOME

    def _mixed(self, i: int, stage: Stage, batch, items: list, refused: Refused) -> list:
        """A batch of records the stage takes and records it passes: each run of the former in one call, the
        latter left in place between them."""
        takes = self._kinds[i][0]
        out: list = []
        run: list = []
        made = 0
        for item in items:
            if type(item) in takes:
                run.append(item)
                continue
            if run:
                done = self._call(stage, batch, run, refused)
                made += len(done)
                out += done
                run = []
            out.append(item)
        if run:
            done = self._call(stage, batch, run, refused)
            made += len(done)
            out += done
        self._counts[i] += made
        return out

    @staticmethod
    def _call(stage: Stage, batch, items: list, refused: Refused) -> list:
        """The stage on `items`; raising as a whole, it runs again one record at a time (its refusals of the
        failed call forgotten), so only the records it fails on are refused."""
        mark = len(refused.entries)
        try:
            return batch(items, refused)
        except Exception as err:  # noqa: BLE001 - per record below
            if len(items) == 1:
                del refused.entries[mark:]
                refused.add(items[0], err)
                return []
            log.warning("event=stage_batch_failure stage=%s records=%d error=%r note=per_record",
                        stage.name, len(items), str(err)[:200])
            del refused.entries[mark:]
            out: list = []
            for item in items:
                mark = len(refused.entries)
                try:
                    out += batch([item], refused)
                except Exception as one:  # noqa: BLE001 - this record alone
                    del refused.entries[mark:]
                    refused.add(item, one)
            return out

    def _refusals(self, stage: Stage, refused: Refused, raws: list[RawMessage], into: list) -> None:
        """The stage's refused records as (message, Refusal), counted; `refused` emptied."""
        for record, err in refused.entries:
            source = _source(record, raws)
            metric = getattr(record, "metric", None)
            metric = metric if isinstance(metric, str) else None
            if isinstance(err, Invalid):
                self.metrics.invalid.labels(stage.name, err.reason).inc()
                into.append((source, Refusal(stage.name, err.reason, str(err), INVALID, metric)))
                continue
            # Anything else a stage raises (a bug or a surprise) is a processing failure: it must not kill the
            # thread, nor lose the batch.
            log.error("event=stage_failure stage=%s topic=%s", stage.name, source.mqtt_topic, exc_info=err)
            into.append((source, Refusal(stage.name, "processing_error", f"{type(err).__name__}: {err}", FAILED, metric)))
        refused.entries.clear()

    @staticmethod
    def _letters(raws: list[RawMessage], refusals: list[tuple[RawMessage, Refusal]]) -> list[DeadLetter]:
        """One letter per message and kind (merge_refusals), in the order of the messages."""
        by_message: dict[int, tuple[RawMessage, list[Refusal]]] = {}
        for source, refusal in refusals:
            entry = by_message.get(id(source))
            if entry is None:
                entry = by_message[id(source)] = (source, [])
            entry[1].append(refusal)
        groups = list(by_message.values())
        if len(groups) > 1:
            position = {id(raw): n for n, raw in enumerate(raws)}
            groups.sort(key=lambda g: position.get(id(g[0]), len(raws)))
        return [letter for source, group in groups for letter in merge_refusals(source, group)]


def _batch_of(stage: Any):
    """The stage's process_batch, or its per-record `process` looped."""
    batch = getattr(stage, "process_batch", None)
    return batch if batch is not None else partial(per_record, stage.process)


def _source(record: Any, raws: list[RawMessage]) -> RawMessage:
    """The message a refused record came from."""
    if isinstance(record, RawMessage):
        return record
    source = getattr(record, "source", None)
    if isinstance(source, RawMessage):
        return source
    if len(raws) == 1:  # a batch of one: there is no other
        return raws[0]
    log.error("event=refusal_without_source record_type=%s", type(record).__name__)
    return UNKNOWN_SOURCE


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
