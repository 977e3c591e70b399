"""Which Kafka partitions this instance owns, so per-sensor state follows the consumer group's assignment.

Sinks that keep state per sensor (alert evaluator, window aggregator) implement `partitions_assigned` and
`partitions_revoked` (see BatchingSink); the Kafka source calls them from its rebalance callbacks, after the
batches of the revoked partitions are written and committed.
"""
from __future__ import annotations

from ..registry.formats import crc32_partition, sensor_key


def sensor_partition(sensor_id: str, partitions: int) -> int:
    """The partition librdkafka's default partitioner (consistent_random: CRC32 of the key) gives a sensor.

    The formats that come with the pipeline key every message by its sensor id (pipeline/registry/formats.py,
    `Format.sensor_partition`, the same mapping). Used only for sensors known from the database; a sensor's
    readings carry their real partition."""
    return crc32_partition(sensor_key(sensor_id), partitions)


class Ownership:
    """The owned partitions; None until the first assignment, meaning "everything loaded at start-up"."""

    def __init__(self) -> None:
        self.owned: set[int] | None = None

    def owns(self, partition: int) -> bool:
        """True while the partition is ours (and before any assignment: a single instance owns all). Records
        made inside the daemon (log counts) carry no Kafka partition (-1): always ours."""
        return partition < 0 or self.owned is None or partition in self.owned

    def assign(self, partitions: set[int]) -> tuple[set[int] | None, set[int]]:
        """A new (full, eager-protocol) assignment. Returns (to_drop, to_load): to_drop None means "every
        partition not in the assignment" (state loaded at start covered all of them)."""
        if self.owned is None:
            self.owned = set(partitions)
            return None, set()
        to_drop = self.owned - partitions
        to_load = partitions - self.owned
        self.owned = set(partitions)
        return to_drop, to_load

    def revoke(self, partitions: set[int]) -> set[int]:
        """Partitions taken away: their state must be dropped (the next owner rebuilds it)."""
        if self.owned is None:
            self.owned = set()
            return set(partitions)
        gone = self.owned & partitions
        self.owned -= partitions
        return gone
