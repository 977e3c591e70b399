"""Offset continuity: each partition's offsets must follow on, or the consumer says so.

The raw topic is written without transactions or compaction, so within a partition every offset from the
position the consumer started at is a record it must see. A broker that makes a batch visible after a later
one (seen on the development broker) would otherwise let the consumer read past the batch and commit past
it, losing it without a trace. `Continuity` is the pure core: the consumer tells it where each partition
starts (the committed offset, or None when unknown) and shows it every message in order; it answers per
message whether to take it, skip it (already taken) or drop it because it lies past a hole, and when to seek
back to the hole and fetch again. A hole still there after `max_attempts` fetches and `max_wait_s` is given
up: the consumer takes what follows, but commits nothing at or past the hole (`hold`), and it is reported.
In `allow` mode (topics that legitimately skip offsets: compaction, transaction markers) a hole is counted
and passed over.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from ..records import KAFKA_SENSOR_TYPE  # noqa: F401 - reserved, defined below every layer

TAKE, SKIP, DROP = "take", "skip", "drop"
TP = tuple[str, int]  # (topic, partition)
SENSOR_TYPE = KAFKA_SENSOR_TYPE  # readings of records missing for good: sensor kafka:<topic>:<partition>
METRIC = "kafka_offset_gap"
SENSOR_ID_MAX = 50
# How the consumer logs each event: its level, and a note saying what it means.
EVENT_LOG = {"detected": (logging.WARNING, "fetching_again_from_first"), "refetched": (logging.INFO, "all_there_now"),
             "given_up": (logging.ERROR, "commits_held_at_first_see_kafka.offset_gaps"),
             "expired": (logging.ERROR, "deleted_by_retention_before_consumed"),
             "allowed": (logging.INFO, "kafka.offset_gaps_allow")}


def sensor_id(topic: str, partition: int) -> str:
    """The reserved sensor id a partition's missing records are reported under (the topic cut to fit)."""
    tail = f":{partition}"
    return f"{SENSOR_TYPE}:{topic}"[:SENSOR_ID_MAX - len(tail)] + tail


@dataclass
class Gap:
    """A hole in one partition: offsets first..last were not delivered."""

    topic: str
    partition: int
    first: int
    last: int
    since: float  # when it was first seen (monotonic s)
    attempts: int = 0  # fetches again from `first` so far
    next_seek: float = 0.0
    awaiting: bool = False  # a seek was made: the next message of the partition is the first from `first` on
    expired: int = 0  # offsets of it that retention deleted (below the partition's log start): not a loss to fetch

    @property
    def missing(self) -> int:
        return self.last - self.first + 1


@dataclass
class Partition:
    """What is known of one assigned partition."""

    expected: int | None = None  # the next offset due; None until the committed position or a message tells
    gap: Gap | None = None  # a hole being fetched again
    held: list[Gap] = field(default_factory=list)  # holes given up: commits stop at the first of them


class Continuity:
    """Per-partition expected offsets, holes and their fetch-again attempts; no IO, no clock of its own."""

    def __init__(self, mode: str = "refetch", max_attempts: int = 5, max_wait_s: float = 5.0, backoff_s: float = 0.2):
        if mode not in ("refetch", "allow"):
            raise ValueError(f"offset gap mode must be refetch or allow, not {mode!r}")
        self.mode = mode
        self.max_attempts = max_attempts
        self.max_wait_s = max_wait_s
        self.backoff_s = backoff_s
        self.parts: dict[TP, Partition] = {}
        # Counts since start, for metrics and the report.
        self.detected = self.refetched = self.given_up = self.allowed = self.expired = 0
        self.events: list[tuple[str, Gap]] = []  # (what, gap) since the last `take_events`

    # -- assignment -------------------------------------------------------------------------------
    def start(self, tp: TP, offset: int | None) -> None:
        """The partition is (re)assigned and will be read from `offset` (None: unknown until its first message)."""
        self.parts[tp] = Partition(offset if offset is not None and offset >= 0 else None)

    def forget(self, tp: TP) -> None:
        """The partition went to another consumer: what was known of it no longer holds."""
        self.parts.pop(tp, None)

    # -- messages ---------------------------------------------------------------------------------
    def check(self, tp: TP, offset: int, now: float) -> str:
        """TAKE (process it), SKIP (taken before: a redelivery) or DROP (it lies past a hole being fetched again)."""
        part = self.parts.get(tp)
        if part is None:
            part = self.parts[tp] = Partition()
        gap = part.gap
        if gap is not None:
            return self._while_gap(part, gap, tp, offset, now)
        expected = part.expected
        if expected is None or offset == expected:
            part.expected = offset + 1
            return TAKE
        if offset < expected:
            return SKIP
        hole = Gap(tp[0], tp[1], expected, offset - 1, now)
        self.detected += 1
        if self.mode == "allow":
            self.allowed += 1
            self._event("allowed", hole)
            part.expected = offset + 1
            return TAKE
        part.gap = hole
        self._event("detected", hole)
        return DROP

    def _while_gap(self, part: Partition, gap: Gap, tp: TP, offset: int, now: float) -> str:
        if offset < gap.first:
            return SKIP
        if offset == gap.first:  # fetched again: the hole is filled
            part.gap, part.expected = None, offset + 1
            if gap.first <= gap.last:
                self.refetched += 1
                self._event("refetched", gap)
            return TAKE
        if not gap.awaiting:  # the rest of a fetch from before the seek
            return DROP
        gap.awaiting = False
        gap.last = offset - 1  # the first message from gap.first on: the hole as it stands now
        if gap.attempts >= self.max_attempts and now - gap.since >= self.max_wait_s:
            part.gap, part.expected = None, offset + 1
            part.held.append(gap)
            self.given_up += 1
            self._event("given_up", gap)
            return TAKE
        gap.next_seek = now + self.backoff_s
        return DROP

    def log_start(self, tp: TP, low: int) -> None:
        """The partition's log starts at `low` now: the part of a hole below it was deleted by retention (the
        consumer lagged behind it), which fetching again cannot bring back; only the rest is fetched again."""
        part = self.parts.get(tp)
        gap = part.gap if part is not None else None
        if gap is None or low <= gap.first:
            return
        first = min(low, gap.last + 1)
        self.expired += 1
        self._event("expired", replace(gap, last=first - 1))
        gap.expired, gap.first = first - gap.first, first

    def seeks_due(self, now: float) -> list[tuple[TP, int]]:
        """Partitions to seek back to their hole now; each counts as one attempt."""
        out = []
        for tp, part in self.parts.items():
            gap = part.gap
            if gap is not None and not gap.awaiting and now >= gap.next_seek:
                gap.attempts += 1
                gap.awaiting = True
                out.append((tp, gap.first))
        return out

    def seek_failed(self, tp: TP) -> None:
        """The seek did not happen (the partition was taken away meanwhile): try again after the backoff."""
        part = self.parts.get(tp)
        if part is not None and part.gap is not None:
            part.gap.awaiting = False

    # -- commits and reports ----------------------------------------------------------------------
    def hold(self, tp: TP) -> int | None:
        """The highest offset that may be committed for the partition (None: no limit): the first hole's start."""
        part = self.parts.get(tp)
        if part is None:
            return None
        limits = [g.first for g in part.held]
        if part.gap is not None:  # nothing past a hole still being fetched is taken, but say so anyway
            limits.append(part.gap.first)
        return min(limits) if limits else None

    def cap(self, offsets: dict[TP, int]) -> dict[TP, int]:
        """Commit offsets limited by the holds; a partition whose limit is below what it would commit keeps it."""
        out = {}
        for tp, offset in offsets.items():
            limit = self.hold(tp)
            out[tp] = offset if limit is None else min(offset, limit)
        return out

    def held(self) -> list[Gap]:
        """Holes given up on the partitions assigned now, in partition order."""
        return [g for tp in sorted(self.parts) for g in self.parts[tp].held]

    def _event(self, what: str, gap: Gap) -> None:
        self.events.append((what, replace(gap)))  # as it is now: the gap itself changes on

    def take_events(self) -> list[tuple[str, Gap]]:
        events, self.events = self.events, []
        return events


def missing_by_partition(gaps) -> dict[TP, int]:
    """Records missing per partition in the given holes."""
    out: dict[TP, int] = {}
    for g in gaps:
        out[(g.topic, g.partition)] = out.get((g.topic, g.partition), 0) + g.missing
    return out
