"""Partitioned history against the real services: migration 0007 from an empty and from a populated
database, retention by whole partitions (and --dry-run), partitions made ahead by the daemon and on demand
by the sink, and `pipeline.tools.rebuild` against the daemon's own window rows."""
from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta, timezone

import psycopg
import pytest

import migrations
from pipeline.tools import rebuild
from pipeline.storage.partitions import existing, partition_name, span, utc_now
from pipeline.records import LogRecord, RawMessage, Reading
from pipeline.storage.retention import run_once
from pipeline.sinks.log_store import LogSink
from pipeline.sinks.postgres import PostgresSink
from tests.integration.clients import Publisher, RunningPipeline, wait_for
from tests.integration.conftest import ROOT
from tests.integration.test_windows_alerts import WINDOWS, aligned_past, reading, utc

NOW = utc_now().replace(microsecond=0)


def migrate_up_to(env, version: int):
    """The database as today's migrations up to `version` leave it."""
    everything = migrations.available
    try:
        migrations.available = lambda: [m for m in everything() if m[0] <= version]
        return env.migrate()
    finally:
        migrations.available = everything


def indexes_of(env, table: str) -> set[tuple[str, str]]:
    return {(r[0], r[1]) for r in env.query(
        "SELECT am.amname, pg_get_indexdef(i.indexrelid) ~ 'UNIQUE' FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_am am ON am.oid = c.relam WHERE i.indrelid = to_regclass(%s)", (table,))}


def test_a_fresh_database_has_partitions_from_yesterday_to_three_days_ahead(env):
    env.migrate()
    today = span(NOW, "1d")[0]
    for table in ("measurements", "logs"):
        parts = existing(env.db(), table)
        assert [p.name for p in parts] == [partition_name(table, today + timedelta(days=k), "1d") for k in range(-1, 4)]
    # Per partition: the reading identity (unique B-tree) and one BRIN over time and id.
    assert indexes_of(env, partition_name("measurements", today, "1d")) == {("btree", True), ("brin", False)}
    with env.db() as conn:
        conn.execute("INSERT INTO sensors (sensor_id, type) VALUES ('s1', 'sensor')")
        conn.execute("INSERT INTO measurements (sensor_id, metric, value, timestamp) VALUES ('s1', 't', 1, %s)", (NOW,))
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO measurements (sensor_id, metric, value, timestamp) VALUES ('s1', 't', 2, %s)", (NOW,))
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO measurements (sensor_id, metric, value, timestamp) VALUES ('nobody', 't', 2, %s)",
                         (NOW,))


def test_a_populated_unpartitioned_database_is_converted_without_losing_a_row(env):
    settings = migrate_up_to(env, 6)
    with env.db() as conn:
        conn.execute("INSERT INTO sensors (sensor_id, type) SELECT 's' || g, 'sensor' FROM generate_series(1, 5) g")
        # 40 days of readings, one every 2 minutes per sensor: 144,000 rows, some already past the 30-day limit.
        conn.execute("INSERT INTO measurements (sensor_id, metric, value, timestamp) SELECT 's' || (g %% 5 + 1), "
                     "'temperature', g, %s - (g / 5) * interval '2 minutes' FROM generate_series(0, 143999) g", (NOW,))
        conn.execute("INSERT INTO logs (app, level, message, timestamp, received_at, kafka_partition, kafka_offset) "
                     "SELECT 'a', 'INFO', 'm' || g, %s - g * interval '1 hour', %s, 0, g FROM generate_series(0, 999) g",
                     (NOW, NOW))
    before = env.query("SELECT count(*), max(id), sum(value), min(timestamp), max(timestamp) FROM measurements")[0]
    logs_before = env.query("SELECT count(*), max(id) FROM logs")[0]
    read = "SELECT seq_tup_read FROM pg_stat_user_tables WHERE relid = to_regclass(%s)"
    read_before = env.query(read, ("measurements",))[0][0]

    migrations.migrate(settings, out=open("/dev/null", "w"))
    # Read (the CHECK validated, the BRIN built), never rewritten: the old table is the partition.
    # The migration's backend reports its table statistics asynchronously (PostgreSQL 15 flushes them about a
    # second after its transactions): wait for them rather than read them at once.
    deadline = time.monotonic() + 10
    while env.query(read, ("measurements_legacy",))[0][0] - read_before < before[0] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert env.query(read, ("measurements_legacy",))[0][0] - read_before >= before[0]
    assert env.query("SELECT relkind FROM pg_class WHERE relname = 'measurements'") == [("p",)]
    assert env.query("SELECT count(*), max(id), sum(value), min(timestamp), max(timestamp) FROM measurements")[0] == before
    assert env.query("SELECT count(*), max(id) FROM logs")[0] == logs_before
    parts = existing(env.db(), "measurements")
    assert parts[0].name == "measurements_legacy" and parts[0].lower is None and parts[0].upper == span(NOW, "1d")[1]
    assert [p.lower for p in parts[1:]] == [span(NOW, "1d")[1] + timedelta(days=k) for k in range(3)]
    with env.db() as conn:
        # The identity is still enforced on the old rows; ids continue from the sequence.
        oldest = before[3]
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO measurements (sensor_id, metric, value, timestamp) VALUES ('s1', 'temperature', 0, %s)",
                         (oldest,))
        new_id = conn.execute("INSERT INTO measurements (sensor_id, metric, value, timestamp) VALUES "
                              "('s1', 'temperature', 0, %s) RETURNING id", (NOW + timedelta(days=1),)).fetchone()[0]
        assert new_id > before[1]  # (the refused insert above took a value too)
        assert conn.execute("SELECT tableoid::regclass::text FROM measurements WHERE id = %s", (new_id,)).fetchone()[0] \
            == partition_name("measurements", span(NOW, "1d")[1], "1d")

    # Retention trims the old table row by row (it straddles the limit) and keeps everything younger.
    cutoff = NOW - timedelta(days=30)
    expired_rows = env.query("SELECT count(*) FROM measurements WHERE timestamp < %s", (cutoff,))[0][0]
    run = run_once(settings, redis_client=env.redis, now=NOW)
    result = next(r for r in run.results if r.name == "measurements")
    assert result.rows == expired_rows > 0 and result.partitions == []
    assert env.query("SELECT count(*), min(timestamp) >= %s FROM measurements", (cutoff,))[0] == (before[0] - expired_rows + 1, True)


def test_a_large_table_prepared_online_is_attached_without_being_read(env):
    settings = migrate_up_to(env, 6)
    with env.db() as conn:
        conn.execute("INSERT INTO sensors (sensor_id, type) VALUES ('s1', 'sensor')")
        conn.execute("INSERT INTO measurements (sensor_id, metric, value, timestamp) SELECT 's1', 'temperature', g, "
                     "%s - g * interval '1 minute' FROM generate_series(1, 50000) g", (NOW,))
        # What docs/operations.md ("Converting a large table") has an operator run while the daemon writes.
        before = span(NOW, "1d")[1] + timedelta(days=1)
        conn.execute(f"ALTER TABLE measurements ADD CONSTRAINT measurements_before CHECK (timestamp < '{before}') NOT VALID")
        conn.execute("ALTER TABLE measurements VALIDATE CONSTRAINT measurements_before")
        conn.execute("CREATE INDEX CONCURRENTLY measurements_legacy_time_brin ON measurements USING brin (timestamp, id) "
                     "WITH (autosummarize = on)")
    read = "SELECT seq_tup_read FROM pg_stat_user_tables WHERE relid = to_regclass(%s)"
    read_before = env.query(read, ("measurements",))[0][0]

    migrations.migrate(settings, out=open("/dev/null", "w"))
    legacy = existing(env.db(), "measurements")[0]
    assert (legacy.name, legacy.lower, legacy.upper) == ("measurements_legacy", None, before)
    assert env.query(read, ("measurements_legacy",))[0][0] - read_before < 10  # neither validated nor indexed again
    assert indexes_of(env, "measurements_legacy") == {("btree", True), ("btree", False), ("brin", False)}
    assert env.query("SELECT count(*) FROM measurements")[0][0] == 50000
    assert not env.query("SELECT 1 FROM pg_constraint WHERE conname = 'measurements_before'")


def test_retention_drops_whole_partitions_keeps_the_straddling_one_and_dry_run_changes_nothing(env, tmp_path):
    settings = env.migrate()
    sink = PostgresSink(settings.config.postgres, settings.secrets.postgres_password, settings=settings.config.sinks.postgres,
                        retry=settings.config.retry, metrics=env.metrics(), queue_max_batches=1)
    sink.start()
    cutoff = NOW - timedelta(days=30)
    try:
        # One reading an hour for 40 days (days older than every partition get theirs made on demand), and one
        # just older than the limit, in the partition that straddles it.
        t0 = (NOW - timedelta(days=40)).timestamp()
        readings = [Reading("s1", "sensor", None, "temperature", float(h), t0 + h * 3600 + 0.5, t0) for h in range(40 * 24)]
        edge = cutoff.replace(tzinfo=timezone.utc).timestamp() - 0.001
        readings.append(Reading("s1", "sensor", None, "temperature", -1.0, edge, edge))
        sink.write(readings)
    finally:
        sink.close()
    hours = len(readings)
    parts = existing(env.db(), "measurements")
    whole = [p.name for p in parts if p.upper <= cutoff]
    straddling = next(p for p in parts if p.lower < cutoff < p.upper)
    kept_rows = env.query("SELECT count(*) FROM measurements WHERE timestamp >= %s", (straddling.lower,))[0][0]

    config = env.write_config(tmp_path / "config.yaml")
    dry = subprocess.run([sys.executable, "-m", "pipeline.tools.retention", "--config", str(config), "--dry-run"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert dry.returncode == 0, dry.stderr
    line = next(line for line in dry.stdout.splitlines() if line.startswith("measurements "))
    assert f"would delete {hours - kept_rows} row(s)" in line and ", ".join(whole) in line
    assert env.query("SELECT count(*) FROM measurements")[0][0] == hours
    assert [p.name for p in existing(env.db(), "measurements")] == [p.name for p in parts]

    run = run_once(settings, redis_client=env.redis)
    result = next(r for r in run.results if r.name == "measurements")
    assert result.partitions == whole and result.rows == hours - kept_rows and result.batches == 0
    assert [p.name for p in existing(env.db(), "measurements")] == [p.name for p in parts if p.name not in whole]
    # Nothing it should keep is trimmed: the partition straddling the limit keeps its older rows too.
    assert env.query("SELECT count(*) FROM measurements")[0][0] == kept_rows
    assert env.query("SELECT min(timestamp) < %s FROM measurements", (cutoff,))[0][0] is True
    assert not env.query("SELECT 1 FROM pg_class WHERE relname = ANY(%s)", (whole,))


def test_the_daemon_makes_partitions_ahead_stores_a_day_without_one_and_rebuild_equals_its_rows(env):
    settings = env.migrate(env.settings(storage={"partitions_ahead": 5}, **WINDOWS))
    with env.db() as conn:  # as if the database had been migrated days ago: no partition for now or ahead
        for p in existing(conn, "measurements"):
            conn.execute(f'DROP TABLE "{p.name}"')
    root, t0 = env.root, aligned_past()
    old = (NOW - timedelta(days=10)).timestamp()
    sensors = [f"r{i:02d}" for i in range(12)]
    pub = Publisher()
    metrics = env.metrics()
    with RunningPipeline(settings, metrics):
        ahead = span(NOW, "1d")[0] + timedelta(days=5)
        assert partition_name("measurements", ahead, "1d") in {p.name for p in existing(env.db(), "measurements")}
        # The first reading of its partition, so not late for the windows: ten days old, no partition for it.
        pub.publish_all([reading(root, "old-1", "temperature", 7.5, old)])
        wait_for(lambda: env.query("SELECT count(*) FROM measurements WHERE sensor_id = 'old-1'")[0][0] == 1,
                 what="the reading of a day without a partition")
        pub.publish_all([reading(root, s, "temperature", round(10 + i * 0.37 + k * 1.3, 2), t0 + k * 7 + i % 5)
                         for k in range(8) for i, s in enumerate(sensors)])
        pub.publish_all([reading(root, s, "temperature", 0.0, t0 + 65) for s in sensors])
        wait_for(lambda: env.query("SELECT count(*) FROM aggregations WHERE period = '1m' AND sensor_id LIKE 'r%%'")[0][0]
                 == len(sensors), what="the daemon's 1m rows")
    pub.close()
    assert partition_name("measurements", span(utc(old), "1d")[0], "1d") in {p.name for p in existing(env.db(), "measurements")}
    created = "pipeline_storage_partitions_created_total"
    assert metrics.registry.get_sample_value(created, {"table": "measurements", "reason": "on_demand"}) == 1
    assert metrics.registry.get_sample_value(created, {"table": "measurements", "reason": "ahead"}) == 7  # yesterday .. +5

    window = "SELECT sensor_id, metric, period, timestamp, avg_value, min_value, max_value, count FROM aggregations " \
             "WHERE sensor_id LIKE 'r%%' AND timestamp >= %s AND timestamp < %s ORDER BY 1, 2, 3, 4"
    span_args = (utc(t0), utc(t0 + 60))
    daemon_rows = env.query(window, span_args)
    assert sum(r[2] == "1m" for r in daemon_rows) == len(sensors) and len(daemon_rows) > 5 * len(sensors)
    env.query("UPDATE aggregations SET avg_value = -1, count = 0 WHERE sensor_id = 'r03' RETURNING 1")
    env.query("DELETE FROM aggregations WHERE sensor_id = 'r04' RETURNING 1")
    argv = ["--from", str(t0), "--to", str(t0 + 60)]
    assert rebuild.main(argv, settings=settings) == 0
    assert env.query(window, span_args) == daemon_rows
    ids = env.query("SELECT id FROM aggregations ORDER BY id")
    assert rebuild.main(argv, settings=settings) == 0  # twice: the same rows, the same ids
    assert env.query(window, span_args) == daemon_rows and env.query("SELECT id FROM aggregations ORDER BY id") == ids
    # One sensor and one period, from the readings.
    env.query("DELETE FROM aggregations WHERE sensor_id = 'r05' AND period = '10s' RETURNING 1")
    assert rebuild.main([*argv, "--sensor", "r05", "--period", "10s"], settings=settings) == 0
    assert env.query(window, span_args) == daemon_rows


def test_a_log_record_for_a_day_without_a_partition_is_stored_once(env):
    settings = env.migrate()
    cfg, secrets = settings.config, settings.secrets
    sink = LogSink(cfg.postgres, secrets.postgres_password, cfg.redis, secrets.redis_password, settings=cfg.sinks.logs,
                   retry=cfg.retry, metrics=env.metrics(), queue_max_batches=1)
    sink.start()
    try:
        old = (NOW - timedelta(days=12)).replace(tzinfo=timezone.utc).timestamp()
        now = NOW.replace(tzinfo=timezone.utc).timestamp()
        records = [LogRecord("billing", "ERROR", f"m{i}", None, {}, old + i, now, RawMessage("logs/billing", b"{}", now, b"",
                                                                                             "raw", 0, i))
                   for i in range(3)]
        sink.write(records)
        sink.write(records)  # redelivered: the delivery identity (with timestamp) skips it
    finally:
        sink.close()
    assert env.query("SELECT count(*) FROM logs")[0][0] == 3
    assert partition_name("logs", span(utc(old), "1d")[0], "1d") in {p.name for p in existing(env.db(), "logs")}
