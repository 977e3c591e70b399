"""Log sink: application log records into the `logs` table (COPY) and onto a Redis Stream.

PostgreSQL first, then Redis, in one write: a retry after a Redis failure writes PostgreSQL again,
which is harmless because a record already stored is skipped: its identity (app, record key, event time)
is unique. The record key never depends on the Kafka position (`record_key`), so a batch redelivered after
a crash, a record replayed to the raw topic at a new offset, or one its shipper sent again are each stored
once, and counts derived from the table stay exact.

Stream entries (<redis.key_prefix><redis.streams.logs>): id (the record key: consumers drop duplicates by
it), app, level, message, logger, extra (JSON), ts, received_at.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Callable, Sequence

import orjson
import psycopg
import redis
from psycopg_pool import ConnectionPool

from ..storage import partitions
from ..config import PostgresConfig, RedisConfig, Secret
from ..clients.postgres import describe, open_pool
from ..records import LogRecord
from ..runtime.batch import Batch
from .base import BatchingSink
from ..clients.postgres import utc_naive
from ..clients.redis import connect

log = logging.getLogger(__name__)

COLUMNS = "app, level, message, logger, extra, timestamp, received_at, kafka_partition, kafka_offset, record_key"
CREATE_STAGE = ("CREATE TEMP TABLE IF NOT EXISTS logs_stage (app VARCHAR(50), level VARCHAR(10), message TEXT, "
                "logger VARCHAR(200), extra JSONB, timestamp TIMESTAMP, received_at TIMESTAMP, kafka_partition INTEGER, "
                "kafka_offset BIGINT, record_key TEXT) ON COMMIT DELETE ROWS")
COPY_STAGE = f"COPY logs_stage ({COLUMNS}) FROM STDIN"
INSERT_FROM_STAGE = (f"INSERT INTO logs ({COLUMNS}) SELECT {COLUMNS} FROM logs_stage "
                     "ON CONFLICT (app, record_key, timestamp) DO NOTHING")


def record_key(r: LogRecord) -> str:
    """The record's identity within its app and event time, independent of where Kafka stored it: `id:<id>`
    from the producer's id, else `h:<hash>` of its content and MQTT receive stamp (µs), which a Kafka
    redelivery and a replay keep (the bridge's header), while distinct messages never share it."""
    if r.record_id:
        return f"id:{r.record_id}"
    content = orjson.dumps([r.level, r.message, r.logger, r.extra, round(r.received_at * 1_000_000)],
                           option=orjson.OPT_SORT_KEYS)
    return "h:" + hashlib.blake2b(content, digest_size=16).hexdigest()


def delivery_id(r: LogRecord) -> str:
    """The stream entry's id: the record key (consumers drop duplicates by it)."""
    return record_key(r)



class LogSink(BatchingSink):
    """Writes a batch's log records; `on_written` (the log counter) learns which are durable."""

    name = "logs"

    def __init__(self, pg: PostgresConfig, pg_password: Secret, rcfg: RedisConfig, redis_password: Secret, *args,
                 on_written: Callable[[Sequence[LogRecord]], None] | None = None, partition_interval: str = "1d",
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.pg, self.pg_password = pg, pg_password
        self.rcfg, self.redis_password = rcfg, redis_password
        self.on_written = on_written
        self.pool: ConnectionPool | None = None
        self.client: redis.Redis | None = None
        self.stream = rcfg.key_prefix + rcfg.streams.logs
        self.partition_interval = partition_interval  # storage.partition_interval: for partitions made on demand

    def start(self) -> None:
        if self.pool is None:  # start may be retried while the services come up
            self.pool = open_pool(self.pg, self.pg_password, "logs-sink", configure=self._configure)
        if self.client is None:
            self.client = connect(self.rcfg, self.redis_password)
        log.info("event=sink_started sink=logs target=%s stream=%s", describe(self.pg), self.stream)

    def _configure(self, conn: psycopg.Connection) -> None:
        conn.execute(CREATE_STAGE)
        conn.commit()

    def select(self, batch: Batch) -> Sequence[LogRecord]:
        return batch.logs

    def write(self, records: Sequence[LogRecord]) -> None:
        try:
            self._write(records)
        except psycopg.errors.CheckViolation as err:
            if not partitions.is_missing_partition(err):
                raise
            # A record older than every partition of `logs`: make its partition, write again.
            made = partitions.make_for_epochs(self.pool, "logs", [r.ts for r in records], self.partition_interval)
            self.metrics.partitions_created.labels("logs", "on_demand").inc(len(made))
            self._write(records)

    def _write(self, records: Sequence[LogRecord]) -> None:
        assert self.pool is not None and self.client is not None
        rows = []
        for r in records:
            src = r.source
            rows.append((r.app, r.level, r.message, r.logger, orjson.dumps(r.extra).decode(), utc_naive(r.ts),
                         utc_naive(r.received_at), src.partition if src else None, src.offset if src else None,
                         record_key(r)))
        with self.pool.connection() as conn:
            with conn.transaction():
                with conn.cursor() as cur:
                    with cur.copy(COPY_STAGE) as copy:
                        for row in rows:
                            copy.write_row(row)
                    cur.execute(INSERT_FROM_STAGE)
        pipe = self.client.pipeline(transaction=True)
        maxlen = self.rcfg.stream_maxlen
        for r, row in zip(records, rows):
            pipe.xadd(self.stream, {"id": delivery_id(r), "app": r.app, "level": r.level, "message": r.message,
                                    "logger": r.logger or "", "extra": row[4], "ts": repr(r.ts),
                                    "received_at": repr(r.received_at)}, maxlen=maxlen, approximate=True)
        pipe.execute()

    def after_write(self, records: Sequence[LogRecord]) -> None:
        super().after_write(records)
        if self.on_written is not None:
            self.on_written(records)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
        if self.client is not None:
            self.client.close()
