"""What a benchmarked daemon said in its log: partitions it owns, readings it skipped, holes in offsets."""
from __future__ import annotations

import re
from typing import Iterable


def assignment(log_text: str) -> set[int]:
    """The Kafka partitions a daemon owns now, from its log (the last assignment, unless revoked since)."""
    owned: set[int] = set()
    for line in log_text.splitlines():
        if "event=partitions_assigned" in line:
            owned = {int(p) for p in line.rsplit("partitions=", 1)[1].split()[0].split(",") if p}
        elif "event=partitions_revoked" in line:
            owned = set()
    return owned


def deduplicated(log_texts: Iterable[str]) -> dict[str, int]:
    """Readings skipped as already stored, by reason, summed over the daemons' last `event=stopped` lines."""
    totals: dict[str, int] = {"redelivery": 0, "conflict": 0}
    for text in log_texts:
        found = re.findall(r"event=stopped .*deduplicated=(\S+)", text)
        for item in (found[-1].split(",") if found else ()):
            reason, _, n = item.partition(":")
            totals[reason] = totals.get(reason, 0) + int(n)
    return totals


def offset_gaps(log_texts: Iterable[str]) -> dict[str, int]:
    """Holes in a partition's offsets the daemons logged (detected, refetched, given_up, allowed)."""
    totals = {"detected": 0, "refetched": 0, "given_up": 0, "allowed": 0}
    for text in log_texts:
        for event in re.findall(r"event=offset_gap_(\w+)", text):
            totals[event] = totals.get(event, 0) + 1
    return totals
