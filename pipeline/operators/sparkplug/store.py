"""The births' durable store: PostgreSQL table sparkplug_births (pipeline/schema/0010_sparkplug_births.sql).

A birth is written on the consumer thread before the batch it came in goes to the sinks, so before its offset can
be committed: whatever a restart reads again, the births before it are in the table. Each device keeps its last
`kept` births (a redelivery reaches back at most to the last commit, a few batches)."""
from __future__ import annotations

from typing import Callable

import orjson

from .host import Birth

_INSERT = """INSERT INTO sparkplug_births (group_id, edge_node_id, device_id, kafka_partition, kafka_offset, bd_seq, metrics)
VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"""
_PRUNE = """DELETE FROM sparkplug_births b WHERE (group_id, edge_node_id, device_id) = (%s, %s, %s) AND kafka_offset <
(SELECT min(kafka_offset) FROM (SELECT kafka_offset FROM sparkplug_births WHERE (group_id, edge_node_id, device_id) =
(%s, %s, %s) ORDER BY kafka_offset DESC LIMIT %s) newest)"""
_LOAD = """SELECT group_id, edge_node_id, device_id, kafka_partition, kafka_offset, bd_seq, metrics
FROM sparkplug_births WHERE kafka_partition = ANY(%s) ORDER BY kafka_offset"""


def _metrics(b: Birth) -> str | None:
    if b.names is None:
        return None
    by_name = {name: [dt, None] for name, dt in b.names.items()}
    for alias, (name, dt) in (b.aliases or {}).items():
        by_name[name] = [dt, alias]
    return orjson.dumps([[n, dt, a] for n, (dt, a) in by_name.items()]).decode()


def _birth(row) -> Birth:
    group, edge, device, partition, offset, bd_seq, metrics = row
    if metrics is None:
        return Birth(group, edge, device, partition, offset, bd_seq, None, None)
    names = {n: dt for n, dt, _a in metrics}
    aliases = {a: (n, dt) for n, dt, a in metrics if a is not None}
    return Birth(group, edge, device, partition, offset, bd_seq, aliases, names)


class BirthStore:
    """Writes births, reads back those of a set of partitions. `connect` makes an autocommit connection."""

    def __init__(self, connect: Callable[[], object], kept: int = 8):
        self.connect = connect
        self.kept = kept
        self._conn = None

    def _connection(self):
        if self._conn is None or self._conn.closed:
            self._conn = self.connect()
        return self._conn

    def save(self, births: list[Birth]) -> None:
        """Make these births durable (one transaction)."""
        conn = self._connection()
        try:
            with conn.transaction():
                for b in births:
                    who = (b.group_id, b.edge_node_id, b.device_id)
                    conn.execute(_INSERT, (*who, b.partition, b.offset, b.bd_seq, _metrics(b)))
                    conn.execute(_PRUNE, (*who, *who, self.kept))
        except Exception:
            self.close()  # a broken connection is made again on the next try
            raise

    def load(self, partitions: set[int]) -> list[Birth]:
        """The births read from these partitions."""
        conn = self._connection()
        try:
            return [_birth(row) for row in conn.execute(_LOAD, (sorted(partitions),)).fetchall()]
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
