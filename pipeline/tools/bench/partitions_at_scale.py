"""Partitioned `measurements` (migration 0007) against today's unpartitioned layout (migrations 1-6), at scale.

    python -m pipeline.tools.bench.partitions_at_scale [--rows 200000000] [--days 20] [--sensors 500] [--sink-rows 100000]

For each layout in turn, in a throwaway database (bench_part_<random>, dropped afterwards, so at most one
layout's data is on disk at a time):
  1. insert rate through the real PostgresSink (COPY into staging + INSERT ... ON CONFLICT DO NOTHING,
     batches of 1,000, best of 3 rounds of --sink-rows) into the empty table;
  2. `--rows` readings over `--days` whole UTC days, ending two days ago, generated in SQL (partitioned:
     one table per day, indexed, then attached; unpartitioned: indexes dropped and rebuilt around the load);
  3. the same sink insert rate into the full table (readings of now);
  4. bytes on disk (heap, indexes) and the time index: BRIN (partitioned) against the B-tree (0006);
  5. p50/p99 of the dashboard's raw trend query (dashboard/store.py RAW_BUCKETS) for one sensor over a day
     (5-minute buckets) and over a week (1-hour buckets), random sensors and days;
  6. time to expire the oldest day with pipeline.storage.retention.expire (partitioned: one partition detached and
     dropped; unpartitioned: that day's rows deleted in batches of retention.batch_size);
  7. time to rebuild the last day's aggregations (pipeline.operators.windows.rebuild, the configured periods);
  8. unpartitioned only: how long migration 0007 takes to convert the full table (with
     --prepared-conversion: after the online preparation of docs/operations.md, timed too).
"""
from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import psycopg  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

import migrations  # noqa: E402
from pipeline.config import Secrets, Settings, parse  # noqa: E402
from pipeline.dashboard.store import RAW_BUCKETS  # noqa: E402
from pipeline.clients.postgres import conninfo  # noqa: E402
from pipeline.observability.metrics import Metrics  # noqa: E402
from pipeline.storage.partitions import existing  # noqa: E402
from pipeline.operators.windows.rebuild import plan, rebuild  # noqa: E402
from pipeline.records import Reading  # noqa: E402
from pipeline.storage.retention import Target, expire  # noqa: E402
from pipeline.sinks.postgres import PostgresSink  # noqa: E402

MB = 1024 * 1024


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def make_db(partitioned: bool) -> Settings:
    db = f"bench_part_{uuid.uuid4().hex[:8]}"
    settings = Settings(parse({"postgres": {"database": db}}, {}), Secrets.from_env({}), "bench")
    everything = migrations.available
    if not partitioned:  # today's layout: the migrations before 0007
        migrations.available = lambda: [m for m in everything() if m[0] < 7]
    try:
        migrations.migrate(settings, out=open("/dev/null", "w"))
    finally:
        migrations.available = everything
    return settings


def sink_rate(settings: Settings, rows: int, t0: float, rounds: int = 3) -> float:
    """Readings per second through the real sink, batches of 1,000, best of `rounds` (each round new readings,
    after them in time; the first batch warms up, not timed): the box is shared, the best round is the least
    disturbed one."""
    sink = PostgresSink(settings.config.postgres, settings.secrets.postgres_password, settings=settings.config.sinks.postgres,
                        retry=settings.config.retry, metrics=Metrics(CollectorRegistry()), queue_max_batches=1)
    sink.start()
    best = 0.0
    try:
        for r in range(rounds):
            start = t0 + r * (rows + 1000) * 0.001
            readings = [Reading(f"bench-{i % 500:04d}", "environment", "hall", "temperature", 20.0 + (i % 100) / 10,
                                start + i * 0.001, start) for i in range(rows + 1000)]
            sink.write(readings[:1000])
            started = time.perf_counter()
            for i in range(1000, len(readings), 1000):
                sink.write(readings[i:i + 1000])
            best = max(best, rows / (time.perf_counter() - started))
        return best
    finally:
        sink.close()


GENERATE = ("INSERT INTO {table} (sensor_id, metric, value, timestamp) "
            "SELECT 'b' || (g %% %(sensors)s), 'temperature', (g %% 1000) / 10.0, %(lo)s + g * %(step)s "
            "FROM generate_series(0, %(n)s - 1) g")


def load(conn: psycopg.Connection, partitioned: bool, first_day: datetime, days: int, per_day: int, sensors: int) -> float:
    started = time.monotonic()
    conn.execute("INSERT INTO sensors (sensor_id, type) SELECT 'b' || g, 'sensor' FROM generate_series(0, %s) g "
                 "ON CONFLICT DO NOTHING", (sensors - 1,))
    step = timedelta(seconds=86400 / per_day)
    if not partitioned:
        conn.execute("ALTER TABLE measurements DROP CONSTRAINT measurements_pkey")
        conn.execute("DROP INDEX measurements_reading_identity; DROP INDEX measurements_timestamp")
        conn.execute("SET session_replication_role = replica")  # no per-row FK check while seeding
    for d in range(days):
        lo = first_day + timedelta(days=d)
        params = {"sensors": sensors, "lo": lo, "step": step, "n": per_day}
        if partitioned:  # a table of its own, indexed, then attached (its CHECK spares ATTACH a scan)
            name = f"measurements_p{lo:%Y%m%d}"
            conn.execute(f"CREATE TABLE {name} (LIKE measurements INCLUDING DEFAULTS)")
            conn.execute(GENERATE.format(table=name), params)
            conn.execute(f"CREATE UNIQUE INDEX ON {name} (sensor_id, metric, timestamp)")
            conn.execute(f"CREATE INDEX ON {name} USING brin (timestamp, id) WITH (autosummarize = on)")
            conn.execute(f"ALTER TABLE {name} ADD CONSTRAINT r CHECK (timestamp >= %s AND timestamp < %s)".replace(
                "%s", "'{}'").format(lo, lo + timedelta(days=1)))
            conn.execute(f"ALTER TABLE measurements ATTACH PARTITION {name} FOR VALUES FROM ('{lo}') TO "
                         f"('{lo + timedelta(days=1)}')")
            conn.execute(f"ALTER TABLE {name} DROP CONSTRAINT r")
        else:
            conn.execute(GENERATE.format(table="measurements"), params)
        print(f"  day {d + 1}/{days} loaded ({time.monotonic() - started:.0f} s)", flush=True)
    if not partitioned:
        conn.execute("SET session_replication_role = DEFAULT")
        conn.execute("ALTER TABLE measurements ADD PRIMARY KEY (id)")
        conn.execute("CREATE UNIQUE INDEX measurements_reading_identity ON measurements (sensor_id, metric, timestamp)")
        conn.execute("CREATE INDEX measurements_timestamp ON measurements (timestamp)")
    conn.execute("VACUUM ANALYZE measurements")
    return time.monotonic() - started


def sizes(conn: psycopg.Connection, partitioned: bool) -> dict[str, int]:
    """Bytes of heap, of all indexes, and of the time index (BRIN, or the B-tree of 0006)."""
    tables = [p.name for p in existing(conn, "measurements")] if partitioned else ["measurements"]
    heap = indexes = time_index = 0
    for t in tables:
        heap += conn.execute("SELECT pg_table_size(%s)", (t,)).fetchone()[0]
        indexes += conn.execute("SELECT pg_indexes_size(%s)", (t,)).fetchone()[0]
        time_index += int(conn.execute(
            "SELECT coalesce(sum(pg_relation_size(i.indexrelid)), 0) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_am am ON am.oid = c.relam WHERE i.indrelid = to_regclass(%s) AND "
            "(am.amname = 'brin' OR pg_get_indexdef(i.indexrelid) LIKE '%%btree (\"timestamp\")')", (t,)).fetchone()[0])
    return {"heap": heap, "indexes": indexes, "time_index": time_index}


def trend_times(conn: psycopg.Connection, first_day: datetime, days: int, sensors: int, span_days: int, bucket_s: int,
                n: int) -> list[float]:
    rng = random.Random(span_days)
    out = []
    for _ in range(n):
        start = first_day + timedelta(days=rng.randrange(0, days - span_days + 1))
        args = (timedelta(seconds=bucket_s), f"b{rng.randrange(sensors)}", "temperature", start,
                start + timedelta(days=span_days), 5000)
        t = time.perf_counter()
        conn.execute(RAW_BUCKETS, args).fetchall()
        out.append(time.perf_counter() - t)
    return out


def run_layout(partitioned: bool, args) -> dict:
    name = "partitioned" if partitioned else "unpartitioned"
    print(f"== {name}", flush=True)
    settings = make_db(partitioned)
    # Loading millions of rows is one statement: no statement timeout for the benchmark's own connections.
    params = conninfo(settings.config.postgres, settings.secrets.postgres_password, statement_timeout_ms=0)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    first_day = today - timedelta(days=args.days + 2)
    out: dict = {}
    try:
        out["sink_empty"] = sink_rate(settings, args.sink_rows, time.time() - 3600)
        print(f"  sink into the empty table: {out['sink_empty']:,.0f} rows/s", flush=True)
        with psycopg.connect(**params, autocommit=True) as conn:
            out["load_s"] = load(conn, partitioned, first_day, args.days, args.rows // args.days, args.sensors)
            out["rows"] = conn.execute("SELECT count(*) FROM measurements").fetchone()[0]
            print(f"  loaded {out['rows']:,} rows in {out['load_s']:.0f} s", flush=True)
        out["sink_full"] = sink_rate(settings, args.sink_rows, time.time() - 1800)
        print(f"  sink into the full table: {out['sink_full']:,.0f} rows/s", flush=True)
        with psycopg.connect(**params, autocommit=True) as conn:
            out["sizes"] = sizes(conn, partitioned)
            print(f"  sizes: {', '.join(f'{k} {v / MB:,.0f} MB' for k, v in out['sizes'].items())}", flush=True)
            for label, span_days, bucket_s in (("day", 1, 300), ("week", 7, 3600)):
                trend_times(conn, first_day, args.days, args.sensors, span_days, bucket_s, 5)  # warm the cache
                times = trend_times(conn, first_day, args.days, args.sensors, span_days, bucket_s, args.queries)
                out[f"trend_{label}"] = (pct(times, 0.5), pct(times, 0.99))
                print(f"  trend over a {label}: p50 {pct(times, 0.5) * 1000:.1f} ms, p99 {pct(times, 0.99) * 1000:.1f} ms",
                      flush=True)
            last_day = first_day + timedelta(days=args.days - 1)
            steps = plan(settings.config.aggregation.periods, None, last_day, last_day + timedelta(days=1))
            started = time.monotonic()
            done = rebuild(conn, steps)
            out["rebuild"] = (time.monotonic() - started, done.readings)
            print(f"  rebuild one day of aggregations ({done.windows} windows, {len(steps)} statements): "
                  f"{out['rebuild'][0]:.1f} s, {done.readings / out['rebuild'][0]:,.0f} readings/s, "
                  f"{done.rows:,} rows written ({done.rows / out['rebuild'][0]:,.0f} rows/s)", flush=True)
            # A 30-day limit seen from 31 days after the first day: exactly the first day has expired.
            target = Target("measurements", "measurements", "timestamp", 30)
            result = expire(conn, target, first_day + timedelta(days=31), settings.config.retention.batch_size)
            out["expire"] = (result.seconds, result.rows, result.partitions, result.batches)
            print(f"  expire the oldest day: {result.seconds:.3f} s, {result.rows:,} rows, partitions "
                  f"{result.partitions}, {result.batches} batches", flush=True)
        if not partitioned:  # the conversion of this full table by migration 0007
            if args.prepared_conversion:  # docs/operations.md, "Converting a large table": online, beforehand
                started = time.monotonic()
                with psycopg.connect(**params, autocommit=True) as conn:
                    bound = today + timedelta(days=2)
                    conn.execute(f"ALTER TABLE measurements ADD CONSTRAINT measurements_before CHECK (timestamp < '{bound}') "
                                 "NOT VALID")
                    conn.execute("ALTER TABLE measurements VALIDATE CONSTRAINT measurements_before")
                    conn.execute("CREATE INDEX CONCURRENTLY measurements_legacy_time_brin ON measurements "
                                 "USING brin (timestamp, id) WITH (autosummarize = on)")
                out["prepare_s"] = time.monotonic() - started
                print(f"  online preparation (VALIDATE, CREATE INDEX CONCURRENTLY): {out['prepare_s']:.1f} s", flush=True)
            started = time.monotonic()
            migrations.migrate(settings, out=open("/dev/null", "w"))
            out["convert_s"] = time.monotonic() - started
            print(f"  migration 0007 on the full table: {out['convert_s']:.2f} s", flush=True)
    finally:
        with psycopg.connect(**conninfo(settings.config.postgres, settings.secrets.postgres_password, "postgres"),
                             autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{settings.config.postgres.database}" WITH (FORCE)')
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000_000)
    p.add_argument("--days", type=int, default=20)
    p.add_argument("--sensors", type=int, default=500)
    p.add_argument("--sink-rows", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=200, help="trend queries per range")
    p.add_argument("--prepared-conversion", action="store_true",
                   help="prove the old table's range and build its BRIN online before migration 0007")
    args = p.parse_args()
    started = time.monotonic()
    part = run_layout(True, args)
    flat = run_layout(False, args)
    per_m = 1e6 / part["rows"]
    print(f"\n== {args.rows:,} readings over {args.days} days, {args.sensors} sensors "
          f"({time.monotonic() - started:.0f} s in all); partitioned / unpartitioned (ratio)")

    def row(label: str, a: float, b: float, unit: str, fmt: str = ",.0f") -> None:
        print(f"{label:<38} {a:{fmt}} {unit} / {b:{fmt}} {unit}  ({a / b:.2f}x)")

    row("sink insert rate, empty table", part["sink_empty"], flat["sink_empty"], "rows/s")
    row("sink insert rate, full table", part["sink_full"], flat["sink_full"], "rows/s")
    row("expire the oldest day", part["expire"][0], flat["expire"][0], "s", ",.3f")
    for label in ("day", "week"):
        row(f"trend over a {label}, p50", part[f"trend_{label}"][0] * 1000, flat[f"trend_{label}"][0] * 1000, "ms", ",.1f")
        row(f"trend over a {label}, p99", part[f"trend_{label}"][1] * 1000, flat[f"trend_{label}"][1] * 1000, "ms", ",.1f")
    for key in ("heap", "indexes", "time_index"):
        row(f"{key} bytes per million readings", part["sizes"][key] * per_m / MB, flat["sizes"][key] * per_m / MB, "MB",
            ",.2f")
    total = lambda s: s["heap"] + s["indexes"]  # noqa: E731
    row("rebuild one day of aggregations", part["rebuild"][0], flat["rebuild"][0], "s", ",.1f")
    if "prepare_s" in flat:
        print(f"online preparation for migration 0007 (daemon running): {flat['prepare_s']:.1f} s")
    print(f"migration 0007 on the full unpartitioned table: {flat['convert_s']:.2f} s "
          f"({(flat['rows'] - flat['expire'][1]) / flat['convert_s']:,.0f} rows/s)")
    row("heap + indexes per million readings", total(part["sizes"]) * per_m / MB, total(flat["sizes"]) * per_m / MB, "MB",
        ",.2f")
    return 0


if __name__ == "__main__":
    sys.exit(main())
