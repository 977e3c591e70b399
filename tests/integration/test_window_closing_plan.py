"""The statements that close many keys of a window, planned on tables just filled and never analyzed (a burst
of new sensors before autovacuum gets to them): no nested loop. Planned with the estimates of such tables
(one row for `closing` and for the window's rows), the rollup rescanned every shorter row of the window per
key (12,500 keys x 50,000 rows: 89 s); a hash join reads them once."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from pipeline.operators.windows.tracker import Window, to_us
from pipeline.operators.windows.store import BY_TIME_FROM_KEYS, WindowStore, close_statement, run_closing
from pipeline.storage import partitions

SENSORS = 2000
START = datetime.utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)  # a 5m window's start


def nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", ()):
        yield from nodes(child)


def fill_without_statistics(env) -> None:
    """SENSORS sensors with a 5m window pending: two readings in each of its minutes and those minutes' 1m rows."""
    settings = env.migrate()
    with env.db() as conn:
        # The test's tables must stay unanalyzed even where autovacuum is on.
        for table in ("aggregations", "aggregation_pending"):
            conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
        partitions.ensure_for(conn, "measurements", [START], settings.config.storage.partition_interval)
        for t in ("sensors", "measurements", "aggregations", "aggregation_pending"):  # none analyzed yet
            assert conn.execute("SELECT reltuples FROM pg_class WHERE relname = %s", (t,)).fetchone()[0] < 0
        conn.execute("INSERT INTO sensors (sensor_id, type) SELECT 'ns-' || i, 'env' FROM generate_series(1, %s) i",
                     (SENSORS,))
        conn.execute("""INSERT INTO measurements (sensor_id, metric, value, timestamp)
                        SELECT 'ns-' || i, 'temperature', i + k, %s + k * interval '30 s'
                          FROM generate_series(1, %s) i, generate_series(0, 9) k""", (START, SENSORS))
        conn.execute("""INSERT INTO aggregations (sensor_id, metric, avg_value, min_value, max_value, count, period, timestamp)
                        SELECT 'ns-' || i, 'temperature', i + 2 * k + 0.5, i + 2 * k, i + 2 * k + 1, 2, '1m',
                               %s + k * interval '1 minute'
                          FROM generate_series(1, %s) i, generate_series(0, 4) k""", (START, SENSORS))
        conn.execute("""INSERT INTO aggregation_pending
                        SELECT '5m', %s, 'ns-' || i, 'temperature', %s + interval '5 minutes', 0
                          FROM generate_series(1, %s) i""", (START, START, SENSORS))


def closing(keys: int, rollup_from: str | None) -> tuple[str, dict]:
    window = Window("5m", to_us(START), to_us(START + timedelta(minutes=5)))
    return close_statement(window, [(f"ns-{i}", "temperature") for i in range(1, keys + 1)], rollup_from)


@pytest.mark.parametrize("rollup_from", ["1m", None], ids=["rolled-up", "from-readings"])
def test_closing_many_keys_on_unanalyzed_tables_is_planned_without_nested_loops(env, rollup_from):
    fill_without_statistics(env)
    sql, params = closing(SENSORS, rollup_from)
    with env.db() as conn, conn.transaction(force_rollback=True), conn.cursor() as cur:
        [(explained,)] = run_closing(cur, "EXPLAIN (FORMAT JSON) " + sql, params)
        # The setting is the statement's alone: the next one in the transaction is planned as usual.
        assert cur.execute("SHOW enable_nestloop").fetchone() == ("on",)
    joins = [n["Node Type"] for n in nodes(explained[0]["Plan"]) if n["Node Type"].endswith(("Join", "Loop"))]
    assert joins and "Nested Loop" not in joins, joins


def test_closing_many_keys_writes_every_rolled_up_row(env):
    fill_without_statistics(env)
    with env.db() as conn, conn.transaction(), conn.cursor() as cur:
        rows = run_closing(cur, *closing(SENSORS, "1m"))
    assert len(rows) == SENSORS >= BY_TIME_FROM_KEYS
    assert env.query("SELECT count(*) FROM aggregation_pending") == [(0,)]
    # ns-7: 1m rows with min 7 + 2k and max 8 + 2k for k = 0..4, two readings each
    assert env.query("SELECT min_value, max_value, count FROM aggregations WHERE period = '5m' AND sensor_id = 'ns-7'") \
        == [(7.0, 16.0, 10)]


def test_pending_windows_are_marked_row_for_row_from_the_compact_statement(env):
    """mark_pending sends each distinct window and series once: every row arrives as given, the ones already
    pending are left as they are, and a batch's windows of several periods and partitions stay apart."""
    env.migrate()
    minute = START + timedelta(minutes=1)
    rows = [(period, start, f"s{i}", metric, start + length, i % 3)
            for period, start, length in (("1m", START, timedelta(minutes=1)), ("1m", minute, timedelta(minutes=1)),
                                          ("5m", START, timedelta(minutes=5)), ("1h", START, timedelta(hours=1)))
            for i in range(40) for metric in ("temperature", "humidity")]
    already = rows[5]
    with env.db() as conn:
        conn.execute("INSERT INTO aggregation_pending VALUES (%s, %s, %s, %s, %s, 9)", already[:5])
        with conn.transaction(), conn.cursor() as cur:
            keys = [(part, Window(period, to_us(start), to_us(end)), sid, metric)
                    for period, start, sid, metric, end, part in rows + rows[:10]]
            WindowStore.mark_pending(cur, keys)  # repeats in a batch are one row
        stored = set(conn.execute("SELECT period, window_start, sensor_id, metric, window_end, kafka_partition "
                                  "FROM aggregation_pending").fetchall())
    assert stored == (set(rows) - {already}) | {already[:5] + (9,)}
    assert len(stored) == 4 * 40 * 2


@pytest.mark.parametrize("rollup_from", ["1m", None], ids=["rolled-up", "from-readings"])
def test_a_slice_of_a_window_is_closed_by_key_in_index_lookups_and_writes_its_rows(env, rollup_from):
    """A slice of a window's keys (the rest close later) reads only its own keys' rows: an index lookup per key,
    on unanalyzed tables too, never a pass over the whole window's rows."""
    fill_without_statistics(env)
    window = Window("5m", to_us(START), to_us(START + timedelta(minutes=5)))
    keys = [(f"ns-{i}", "temperature") for i in range(1, 501)]
    sql, params = close_statement(window, keys, rollup_from, whole=False)
    with env.db() as conn, conn.transaction(force_rollback=True), conn.cursor() as cur:
        [(explained,)] = run_closing(cur, "EXPLAIN (FORMAT JSON) " + sql, params)
    source = "aggregations" if rollup_from else "measurements"
    scans = [n for n in nodes(explained[0]["Plan"]) if n.get("Relation Name", "").startswith(source)
             and n["Node Type"] != "ModifyTable"]
    assert scans, json.dumps(explained[0]["Plan"], indent=1)[:4000]
    for scan in scans:  # every read of the source is a lookup of one key (c.sensor_id, from the slice)
        assert scan["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Bitmap Index Scan"), scan
        assert "c.sensor_id" in scan.get("Index Cond", scan.get("Recheck Cond", "")), scan
    with env.db() as conn, conn.transaction(), conn.cursor() as cur:
        rows = run_closing(cur, sql, params)
    assert len(rows) == 500
    assert env.query("SELECT count(*) FROM aggregation_pending") == [(SENSORS - 500,)]
    # ns-7: readings i + k for k = 0..9 (min 7, max 16, 10 readings); its 1m rows give the same.
    assert env.query("SELECT min_value, max_value, count FROM aggregations WHERE period = '5m' AND sensor_id = 'ns-7'") \
        == [(7.0, 16.0, 10)]
