"""The log sink's own logic over a fake connection and Redis: the delivery identity, the rows COPYed and the
stream entries (what the SQL does with them runs against a real database in tests/integration/test_log_storage.py)."""
from __future__ import annotations

from datetime import datetime

import psycopg
import pytest
import redis
from prometheus_client import CollectorRegistry
from psycopg_pool import PoolTimeout

from pipeline.config import PostgresConfig, RedisConfig, RetryConfig, Secret, SinkConfig
from pipeline.observability.metrics import Metrics
from pipeline.records import LogRecord, RawMessage, Reading
from pipeline.runtime.batch import Batch
from pipeline.sinks.log_store import COPY_STAGE, INSERT_FROM_STAGE, LogSink, record_key
from tests.unit.sinks.fakedb import FakePool, FakeRedis

T0 = 1_700_000_000.0


def record(offset: int = 7, received_at: float = T0 + 0.012, partition: int = 3, **kw) -> LogRecord:
    src = RawMessage("logs/billing", b"{}", received_at, b"billing", "raw", partition, offset)
    fields = dict(app="billing", level="ERROR", message="order 42 failed", logger="billing.db",
                  extra={"order_id": 42, "tags": ["a", "€"]}, ts=T0, received_at=received_at, source=src)
    fields.update(kw)
    return LogRecord(**fields)


def sink(on_written=None) -> tuple[LogSink, FakePool, FakeRedis]:
    s = LogSink(PostgresConfig(), Secret(""), RedisConfig(key_prefix="p:", stream_maxlen=500), Secret(""),
                SinkConfig(), RetryConfig(), Metrics(CollectorRegistry()), 4, on_written=on_written)
    s.pool, s.client = FakePool(), FakeRedis()
    return s, s.pool, s.client


def test_the_record_key_is_the_producers_id_or_content_and_receive_stamp_never_the_kafka_position():
    key = record_key(record())
    assert key.startswith("h:") and len(key) == 34
    assert record_key(record(offset=8)) == key and record_key(record(partition=0)) == key  # a replay: same
    assert record_key(record(source=None)) == key
    assert record_key(record(received_at=T0 + 0.012001)) != key  # another message, 1 µs later
    assert record_key(record(message="order 43 failed")) != key
    assert record_key(record(extra={"tags": ["a", "€"], "order_id": 42})) == key  # key order is not content
    # The producer's id wins: sent again (a new receive stamp, a new offset), the same record.
    assert record_key(record(record_id="b1:7")) == record_key(record(record_id="b1:7", received_at=T0 + 5, offset=9)) == "id:b1:7"


def test_a_write_copies_the_rows_then_streams_one_entry_per_record_with_its_identity():
    s, pool, client = sink()
    first, second = record(), record(offset=8, logger=None, extra={})
    s.write([first, second])
    [copy] = pool.cursor.copies
    assert copy.sql == COPY_STAGE
    when, received = datetime(2023, 11, 14, 22, 13, 20), datetime(2023, 11, 14, 22, 13, 20, 12000)
    assert copy.rows == [
        ("billing", "ERROR", "order 42 failed", "billing.db", '{"order_id":42,"tags":["a","€"]}', when, received, 3, 7,
         record_key(first)),
        ("billing", "ERROR", "order 42 failed", None, "{}", when, received, 3, 8, record_key(second))]
    assert [sql for sql, _ in pool.cursor.executed] == [INSERT_FROM_STAGE] and pool.conn.transactions == 1
    assert [(name, maxlen) for name, _, maxlen, _ in client.sent] == [("p:logs", 500), ("p:logs", 500)]
    assert client.sent[0][1] == {"id": record_key(first), "app": "billing", "level": "ERROR",
                                 "message": "order 42 failed", "logger": "billing.db",
                                 "extra": '{"order_id":42,"tags":["a","€"]}', "ts": "1700000000.0",
                                 "received_at": "1700000000.012"}
    assert client.sent[1][1]["logger"] == "" and client.sent[1][1]["id"] == record_key(second)


def test_postgres_is_written_before_redis_so_a_redis_failure_leaves_nothing_streamed():
    s, pool, client = sink()

    def refuse():
        raise redis.ConnectionError("away")

    client.execute = refuse
    with pytest.raises(redis.ConnectionError) as err:
        s.write([record()])
    assert len(pool.cursor.copies) == 1 and client.sent == []  # the retry writes PostgreSQL again: skipped there
    assert s.is_transient(err.value)


def test_the_sink_selects_log_records_and_tells_the_counter_once_they_are_durable():
    told = []
    s, _, _ = sink(on_written=told.append)
    logs = [record()]
    batch = Batch([Reading("s", "t", None, "m", 1.0, T0, T0)], [], {}, 1, logs=logs)
    assert s.select(batch) == logs
    s._flush([batch], s.select(batch))
    assert told == [logs] and batch.done.is_set()


@pytest.mark.parametrize("err, transient", [
    (psycopg.OperationalError("gone"), True), (psycopg.InterfaceError("closed"), True), (PoolTimeout("busy"), True),
    (redis.TimeoutError("slow"), True), (redis.BusyLoadingError("loading"), True),
    (psycopg.errors.UniqueViolation("dup"), False), (ValueError("bug"), False)])
def test_outages_are_transient_and_refusals_are_not(err, transient):
    assert sink()[0].is_transient(err) is transient
