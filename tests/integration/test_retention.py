"""Retention against the real PostgreSQL and Redis: exactly the expired rows go, in batches, and the
daemon's job does it by itself."""
from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

from pipeline.storage.partitions import ensure_for, existing
from pipeline.storage.retention import run_once
from tests.integration.clients import RunningPipeline, wait_for
from tests.integration.conftest import ROOT

NOW = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


def days_ago(d: float) -> datetime:
    return NOW - timedelta(days=d)


def seed(env) -> None:
    """Rows on both sides of every limit (defaults: raw 30 d, 1m 7 d, 5m 90 d, 1h 730 d, 1d 3650 d, resolved alerts
    180 d)."""
    with env.db() as conn:
        conn.execute("INSERT INTO sensors (sensor_id, type) VALUES ('s1', 'sensor')")
        # Days older than the partitions made ahead: theirs are made as a late write would have them made.
        ensure_for(conn, "measurements", [days_ago(31) - timedelta(seconds=2500), days_ago(31), days_ago(29)], "1d")
        ensure_for(conn, "logs", [days_ago(40), days_ago(2)], "1d")
        # 2,500 expired readings (several batches of 1,000) and 10 recent ones.
        conn.execute("INSERT INTO measurements (sensor_id, metric, value, timestamp) SELECT 's1', 'temperature', g, "
                     "%s - g * interval '1 second' FROM generate_series(1, 2500) g", (days_ago(31),))
        conn.execute("INSERT INTO measurements (sensor_id, metric, value, timestamp) SELECT 's1', 'temperature', g, "
                     "%s - g * interval '1 second' FROM generate_series(1, 10) g", (days_ago(29),))
        for period, age in [("1m", 8), ("1m", 6), ("5m", 91), ("5m", 8), ("1h", 731), ("1h", 400), ("1d", 3651), ("1d", 3000)]:
            conn.execute("INSERT INTO aggregations (sensor_id, metric, avg_value, min_value, max_value, count, period, "
                         "timestamp) VALUES ('s1', 'temperature', 1, 1, 1, 1, %s, %s)", (period, days_ago(age)))
        for resolved, resolved_at, note in [(True, days_ago(181), "old-resolved"), (True, days_ago(10), "new-resolved"),
                                            (False, None, "old-open")]:
            conn.execute("INSERT INTO alerts (sensor_id, metric, type, message, severity, timestamp, resolved, resolved_at) "
                         "VALUES ('s1', 'temperature', %s, %s, 'warning', %s, %s, %s)",
                         (note, note, days_ago(400), resolved, resolved_at))
        conn.execute("INSERT INTO alert_events (alert_id, event, severity, message, timestamp) "
                     "SELECT id, 'opened', 'warning', message, timestamp FROM alerts")


def test_retention_removes_exactly_the_expired_rows(env, tmp_path):
    settings = env.migrate(env.settings(retention={"batch_size": 1000}))
    seed(env)
    for days, message in ((40, "expired"), (2, "kept")):  # logs: retention.logs_days (30)
        env.query("INSERT INTO logs (app, level, message, timestamp, received_at) VALUES ('a', 'INFO', %s, %s, %s) "
                  "RETURNING id", (message, days_ago(days), days_ago(days)))
    stream = f"t{env.run_id}:readings"
    now_ms = int(time.time() * 1000)
    for ts in (now_ms - 8 * 86400_000, now_ms - 86400_000, now_ms):  # one entry past the 7-day age limit
        env.redis.xadd(stream, {"v": "1"}, id=f"{ts}-0")

    # The CLI's dry run reports the counts and changes nothing.
    config = env.write_config(tmp_path / "config.yaml")
    dry = subprocess.run([sys.executable, "-m", "pipeline.tools.retention", "--config", str(config), "--dry-run"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert dry.returncode == 0, dry.stderr
    lines = {line.split()[0]: line for line in dry.stdout.splitlines()}
    assert "would delete 2500 row(s)" in lines["measurements"]
    assert "would delete 1 row(s)" in lines["aggregations_1m"] and "would delete 1 row(s)" in lines["alerts"]
    assert "would delete 1 row(s)" in lines["logs"]
    assert env.query("SELECT count(*) FROM measurements")[0][0] == 2510 and env.redis.xlen(stream) == 3

    run = run_once(settings, redis_client=env.redis)
    results = {r.name: r for r in run.results}
    # Whole partitions go (no row-by-row delete), and only those wholly older than the limit.
    assert (results["measurements"].rows, results["measurements"].batches) == (2500, 0)
    assert results["measurements"].partitions and results["logs"].partitions
    assert {p.name for p in existing(env.db(), "measurements")}.isdisjoint(results["measurements"].partitions)
    assert env.query("SELECT count(*), min(timestamp) > %s FROM measurements", (days_ago(30),))[0] == (10, True)
    kept = env.query("SELECT period, round(extract(epoch FROM %s - timestamp) / 86400) FROM aggregations "
                     "ORDER BY period, timestamp", (NOW,))
    assert kept == [("1d", 3000), ("1h", 400), ("1m", 6), ("5m", 8)]  # aggregates outlive raw readings
    assert sorted(r[0] for r in env.query("SELECT type FROM alerts")) == ["new-resolved", "old-open"]
    assert sorted(r[0] for r in env.query("SELECT message FROM alert_events")) == ["new-resolved", "old-open"]
    assert [r[0] for r in env.query("SELECT message FROM logs")] == ["kept"]
    assert env.redis.xlen(stream) == 2 and run.streams[stream] == 1
    # A second pass finds nothing left to do.
    assert sum(r.rows for r in run_once(settings, redis_client=env.redis).results) == 0


def test_retention_keeps_raw_rows_of_windows_still_pending(env):
    settings = env.migrate()
    seed(env)
    with env.db() as conn:  # a window from 31 days ago that was never closed: its readings are still needed
        conn.execute("INSERT INTO aggregation_pending (period, window_start, sensor_id, metric, window_end, kafka_partition) "
                     "VALUES ('1h', %s, 's1', 'temperature', %s, 0)", (days_ago(31) - timedelta(hours=1), days_ago(31)))
    run_once(settings, redis_client=env.redis)
    assert env.query("SELECT count(*) FROM measurements")[0][0] == 2510


def test_the_daemon_runs_retention_by_itself(env):
    settings = env.migrate()
    seed(env)
    metrics = env.metrics()
    with RunningPipeline(settings, metrics):
        wait_for(lambda: metrics.registry.get_sample_value("pipeline_retention_runs_total", {"result": "ok"}),
                 timeout=40, what="a retention pass")
    assert env.query("SELECT count(*) FROM measurements")[0][0] == 10
    assert metrics.registry.get_sample_value("pipeline_retention_deleted_total", {"target": "measurements"}) == 2500
