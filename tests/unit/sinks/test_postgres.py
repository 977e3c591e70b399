"""The PostgreSQL sink's own logic over a fake connection: the COPY rows it sends, sensors registered once,
and how skipped readings are classified (what PostgreSQL answers is scripted here; the SQL itself runs against
a real database in tests/integration/test_reading_identity.py)."""
from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry

from pipeline.config import PostgresConfig, RetryConfig, Secret, SinkConfig
from pipeline.observability.metrics import Metrics
from pipeline.records import Reading
from pipeline.sinks.postgres import (COPY_MEASUREMENTS, COPY_STAGE, CORRECT, CREATE_STAGE, COUNT_CONFLICTS, INSERT_FROM_STAGE,
                                    INSERT_SENSORS, PostgresSink)
from tests.unit.sinks.fakedb import FakePool

T0 = 1_700_000_000.0


def reading(sensor: str, value: float, ts: float = T0, metric: str = "temperature") -> Reading:
    return Reading(sensor, "boiler", "hall", metric, value, ts, ts + 0.5)


def sink(pool: FakePool, deduplicate: bool = True, aggregator=None) -> PostgresSink:
    s = PostgresSink(PostgresConfig(deduplicate=deduplicate), Secret(""), SinkConfig(), RetryConfig(),
                     Metrics(CollectorRegistry()), 4, listeners=[aggregator] if aggregator is not None else ())
    s.pool = pool
    s._staged.add(pool.conn)  # the staging table exists (test_the_staging_table_is_made_in_the_first_write_only)
    return s


def deduplicated(s: PostgresSink, reason: str):
    return s.metrics.registry.get_sample_value("pipeline_readings_deduplicated_total", {"reason": reason})


def registered(s: PostgresSink):
    return s.metrics.registry.get_sample_value("pipeline_sensors_registered_total")


def test_readings_are_staged_as_text_copy_rows_and_unknown_sensors_registered_once():
    pool = FakePool({INSERT_FROM_STAGE: (3, []), INSERT_SENSORS: (1, [])})
    s = sink(pool)
    s.known_sensors = {"old": T0}
    records = [reading("old", 1.5), reading("new", -2.0, T0 + 0.001), reading("new", 1e-7, T0 + 1, "humidity")]
    assert s.write(records) == 3
    cur = pool.cursor
    assert cur.executed[0] == (INSERT_SENSORS, (["new"], ["boiler"], ["hall"]))  # one statement for the batch
    [copy] = cur.copies
    assert copy.sql == COPY_STAGE
    assert "".join(copy.text) == ("old\ttemperature\t1.5\t1700000000.0\n"
                                  "new\ttemperature\t-2.0\t1700000000.001\n"
                                  "new\thumidity\t1e-07\t1700000001.0\n")
    assert [sql for sql, _ in cur.executed[1:]] == [INSERT_FROM_STAGE]  # nothing skipped: no conflict count
    assert pool.conn.transactions == 1
    assert set(s.known_sensors) == {"old", "new"} and registered(s) == 1
    assert deduplicated(s, "redelivery") is None and deduplicated(s, "conflict") is None

    pool.cursor.executed.clear()
    pool.cursor.results[INSERT_FROM_STAGE] = (1, [])
    s.write([reading("new", 3.0, T0 + 2)])  # known now: not registered again
    assert [sql for sql, _ in pool.cursor.executed] == [INSERT_FROM_STAGE] and registered(s) == 1


def test_skipped_readings_are_counted_as_conflicts_or_redeliveries_and_not_as_written():
    # Of 5 staged readings 2 became rows; of the 3 skipped, PostgreSQL finds 1 whose stored value differs.
    pool = FakePool({INSERT_FROM_STAGE: (2, []), COUNT_CONFLICTS: (1, [(1,)])})
    s = sink(pool)
    s.known_sensors = {"a": T0}
    assert s.write([reading("a", float(i), T0 + i) for i in range(5)]) == 2
    assert [sql for sql, _ in pool.cursor.executed] == [INSERT_FROM_STAGE, COUNT_CONFLICTS]
    assert (deduplicated(s, "conflict"), deduplicated(s, "redelivery")) == (1, 2)


def test_a_replayed_batch_is_all_redeliveries_and_a_batch_of_conflicts_has_none():
    replay = sink(FakePool({INSERT_FROM_STAGE: (0, []), COUNT_CONFLICTS: (1, [(0,)])}))
    replay.known_sensors = {"a": T0}
    assert replay.write([reading("a", 1.0), reading("a", 2.0, T0 + 1)]) == 0
    assert (deduplicated(replay, "redelivery"), deduplicated(replay, "conflict")) == (2, None)
    clash = sink(FakePool({INSERT_FROM_STAGE: (0, []), COUNT_CONFLICTS: (1, [(2,)])}))
    clash.known_sensors = {"a": T0}
    assert clash.write([reading("a", 1.0), reading("a", 2.0, T0 + 1)]) == 0
    assert (deduplicated(clash, "redelivery"), deduplicated(clash, "conflict")) == (None, 2)


def test_written_count_runs_through_the_sink_metrics():
    pool = FakePool({INSERT_FROM_STAGE: (1, []), COUNT_CONFLICTS: (1, [(0,)])})
    s = sink(pool)
    s.known_sensors = {"a": T0}
    s._write_retrying([reading("a", 1.0), reading("a", 1.0)])  # the runner's path: counts what write() returns
    assert s.metrics.registry.get_sample_value("pipeline_sink_records_written_total", {"sink": "postgres"}) == 1


def test_without_deduplication_rows_go_straight_to_measurements_as_utc_timestamps():
    pool = FakePool()
    s = sink(pool, deduplicate=False)
    s.known_sensors = {"a": T0}
    assert s.write([reading("a", 20.5, T0 + 0.25)]) == 1
    [copy] = pool.cursor.copies
    assert copy.sql == COPY_MEASUREMENTS
    assert copy.rows == [("a", "temperature", 20.5, datetime(2023, 11, 14, 22, 13, 20, 250000))]
    assert pool.cursor.executed == []


class FakeAggregator:
    """Records the window hand-off: what was staged in the transaction, what was committed after it."""

    def __init__(self):
        self.staged, self.committed_calls = [], []

    def stage(self, cur, records, inserted):
        self.staged.append(list(inserted))
        return f"windows of {len(inserted)}"

    def committed(self, records, inserted, staged):
        self.committed_calls.append((len(records), list(inserted), staged))


def test_with_an_aggregator_only_the_rows_really_inserted_reach_the_windows_after_the_commit():
    new_rows = [("a", "temperature", 1.0, 1_700_000_000_000_000)]
    pool = FakePool({INSERT_FROM_STAGE: (1, new_rows), COUNT_CONFLICTS: (1, [(0,)])})
    agg = FakeAggregator()
    s = sink(pool, aggregator=agg)
    s.known_sensors = {"a": T0}
    records = [reading("a", 1.0), reading("a", 1.0)]  # the second is a redelivery of the first
    assert s.write(records) == 1
    assert pool.cursor.executed[0][0].endswith("RETURNING sensor_id, metric, value, "
                                                "(extract(epoch FROM timestamp) * 1000000)::bigint")
    assert agg.staged == [new_rows] and agg.committed_calls == []  # nothing told before the commit
    s.after_write(records)
    assert agg.committed_calls == [(2, new_rows, "windows of 1")]
    s.after_write(records)  # a write's hand-off is told once
    assert len(agg.committed_calls) == 1


def test_without_deduplication_the_aggregator_gets_every_reading_in_microseconds():
    agg = FakeAggregator()
    s = sink(FakePool(), deduplicate=False, aggregator=agg)
    s.known_sensors = {"a": T0}
    s.write([reading("a", 2.5, T0 + 0.000001)])
    assert agg.staged == [[("a", "temperature", 2.5, 1_700_000_000_000_001)]]


def test_sensors_idle_for_state_idle_s_are_released_and_registered_again_if_they_return():
    now = [0.0]
    pool = FakePool({INSERT_FROM_STAGE: (1, [])})
    s = PostgresSink(PostgresConfig(), Secret(""), SinkConfig(), RetryConfig(), Metrics(CollectorRegistry()), 4,
                     state_idle_s=1000.0, clock=lambda: now[0], tick_interval_s=5.0)
    s.pool = pool
    s.write([reading("once", 1.0)])
    s.write([reading("steady", 1.0)])
    now[0] = 900.0
    s.write([reading("steady", 2.0, T0 + 900)])
    s.tick()  # starts the sweep clock
    now[0] = 1100.0
    s.tick()
    assert set(s.known_sensors) == {"steady"}
    pool.cursor.executed.clear()
    s.write([reading("once", 3.0, T0 + 1100)])  # it returns: registered again (ON CONFLICT DO NOTHING)
    assert pool.cursor.executed[0] == (INSERT_SENSORS, (["once"], ["boiler"], ["hall"]))
    assert set(s.known_sensors) == {"steady", "once"}
def test_a_sensor_removed_from_the_registry_while_known_is_registered_again_on_the_foreign_key_error():
    import psycopg

    pool = FakePool({INSERT_FROM_STAGE: (1, []), INSERT_SENSORS: (1, [])})
    s = sink(pool)
    s.known_sensors = {"gone": 0.0, "other": 0.0}
    real_execute = pool.cursor.execute
    failures = []

    def execute(sql, params=None):
        if sql == INSERT_FROM_STAGE and not failures:  # the first try: `gone` is no longer in `sensors`
            failures.append(sql)
            raise psycopg.errors.ForeignKeyViolation("measurements_sensor_id_fkey")
        return real_execute(sql, params)

    pool.cursor.execute = execute
    assert s.write([reading("gone", 1.0)]) == 1
    assert (INSERT_SENSORS, (["gone"], ["boiler"], ["hall"])) in pool.cursor.executed
    assert set(s.known_sensors) == {"gone", "other"} and registered(s) == 1


def test_the_staging_table_is_made_in_the_first_write_only():
    """In the write's own transaction, not when the pool connects: a read-only database refuses the write with
    its own message (held and shown as blocked) instead of failing every connection into a pool timeout."""
    pool = FakePool({INSERT_FROM_STAGE: (1, [])})
    s = sink(pool)
    s._staged.clear()
    s.write([reading("a", 1.0)])
    s.write([reading("a", 2.0, T0 + 1)])
    statements = [sql for sql, _ in pool.cursor.executed]
    assert statements.count(CREATE_STAGE) == 1 and statements[0] == CREATE_STAGE


def test_corrected_readings_update_their_stored_rows_in_one_transaction():
    pool = FakePool()
    s = sink(pool)
    s.correct([reading("app:a", 3.0, T0, "log_error"), reading("app:a", 1.0, T0, "log_info")])
    assert pool.conn.transactions == 1
    assert pool.cursor.executed == [(CORRECT, [(3.0, "app:a", "log_error", datetime(2023, 11, 14, 22, 13, 20)),
                                               (1.0, "app:a", "log_info", datetime(2023, 11, 14, 22, 13, 20))])]
