"""The stage interface: a batch of records in, the records that go on out, refusals reported to a collector.

A stage has a `name`, optionally `accepts` (a type: other records pass it unchanged, which is how readings and
log records share one chain) and `process_batch(items, refused) -> list`: the records that go on, in the order
of the records they came from. A record it will not pass goes to `refused.add(record, err)`, `err` an Invalid
for bad input (its reason names the dead letter) or any other exception for a processing failure; the chain
finds the record's message through `record.source` (a RawMessage itself is its own source).

A stage written per record (`process(item) -> list`, raising Invalid or anything else) gets `process_batch` from
RecordStage: each record that raises is refused alone, the others go on. A native `process_batch` must do the
same: if it raises as a whole, the chain runs it again one record at a time, so one bad record fails alone.
Stages never see threads, metrics or Kafka.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol


class Refused:
    """What a stage refused in one call: (record, error) pairs, in the order refused."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: list[tuple[Any, Exception]] = []

    def add(self, record: Any, err: Exception) -> None:
        """Refuse `record`: `err` an Invalid (bad input, its reason kept) or any other error (a processing failure)."""
        self.entries.append((record, err))


class Stage(Protocol):
    name: str

    def process_batch(self, items: list, refused: Refused) -> list: ...


def per_record(process: Callable[[Any], list], items: list, refused: Refused) -> list:
    """`process` applied to each record in turn; a record it raises on is refused alone."""
    out: list = []
    for item in items:
        try:
            out += process(item)
        except Exception as err:  # noqa: BLE001 - the chain tells bad input from failures (chain._refusal)
            refused.add(item, err)
    return out


class RecordStage:
    """Base of a stage written per record: `process(item) -> list` (empty: filtered; raising: refused)."""

    name = "stage"

    def process(self, item: Any) -> list:
        raise NotImplementedError

    def process_batch(self, items: list, refused: Refused) -> list:
        return per_record(self.process, items, refused)
