"""Retention at scale: batched deletes of expired readings from a 10-million-row `measurements`, with a
writer inserting readings at the same time, and the write-path cost of the time index (migration 0006).

    python -m pipeline.tools.bench.retention_10m [--rows 10000000] [--batch 10000] [--write-rate 5000]

Uses a throwaway database (bench_ret_<random>) and drops it afterwards. Rows span 60 days, so with the
30-day limit about half expire.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import psycopg  # noqa: E402

from migrations import migrate  # noqa: E402
from pipeline.config import Secrets, Settings, parse  # noqa: E402
from pipeline.clients.postgres import conninfo  # noqa: E402
from pipeline.storage.retention import Target, expire  # noqa: E402

SENSORS = 500


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


class Writer(threading.Thread):
    """Inserts `rate` fresh readings per second in transactions of 1000 (ON CONFLICT DO NOTHING, like the
    sink's deduplicating path) and records how long each took."""

    def __init__(self, params: dict, rate: int):
        super().__init__(daemon=True)
        self.params, self.rate = params, rate
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.seq = 0

    def run(self) -> None:
        with psycopg.connect(**self.params, autocommit=True) as conn:
            start = time.monotonic()
            n = 0
            while not self.stop.is_set():
                delay = start + n * 1000 / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                base = datetime.now(timezone.utc).replace(tzinfo=None)
                rows = [(f"b{(self.seq + i) % SENSORS}", 20.0, base + timedelta(microseconds=self.seq + i)) for i in range(1000)]
                self.seq += 1000
                t = time.monotonic()
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO measurements (sensor_id, metric, value, timestamp) "
                                "SELECT s, 'temperature', v, ts FROM unnest(%s::text[], %s::float8[], %s::timestamp[]) AS u(s, v, ts) "
                                "ON CONFLICT DO NOTHING", ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]))
                self.latencies.append(time.monotonic() - t)
                n += 1

    def window(self, seconds: float) -> list[float]:
        self.latencies.clear()
        time.sleep(seconds)
        return list(self.latencies)


def describe(name: str, lat: list[float], seconds: float) -> str:
    return (f"{name}: {len(lat) * 1000 / seconds:,.0f} rows/s, batch of 1000 p50 {pct(lat, 0.5) * 1000:.1f} ms, "
            f"p99 {pct(lat, 0.99) * 1000:.1f} ms, max {max(lat, default=float('nan')) * 1000:.1f} ms")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--write-rate", type=int, default=5000)
    p.add_argument("--window-s", type=float, default=20.0)
    args = p.parse_args()
    db = f"bench_ret_{uuid.uuid4().hex[:8]}"
    settings = Settings(parse({"postgres": {"database": db}}, {}), Secrets.from_env({}), "bench")
    migrate(settings, out=open("/dev/null", "w"))
    # Loading millions of rows is one statement: no statement timeout for the benchmark's own connections.
    params = conninfo(settings.config.postgres, settings.secrets.postgres_password, statement_timeout_ms=0)
    now = datetime.now(timezone.utc)
    try:
        with psycopg.connect(**params, autocommit=True) as conn:
            conn.execute("INSERT INTO sensors (sensor_id, type) SELECT 'b' || g, 'sensor' FROM generate_series(0, %s) g", (SENSORS - 1,))
            t = time.monotonic()
            conn.execute("DROP INDEX measurements_reading_identity; DROP INDEX measurements_timestamp")
            conn.execute("SET session_replication_role = replica")  # skip the per-row FK check while seeding
            span = 60 * 86400.0
            conn.execute("INSERT INTO measurements (sensor_id, metric, value, timestamp) "
                         "SELECT 'b' || (g %% %s), 'temperature', g %% 100, %s - make_interval(secs => %s - g * %s) "
                         "FROM generate_series(1, %s) g",
                         (SENSORS, now.replace(tzinfo=None), span, span / args.rows, args.rows))
            conn.execute("SET session_replication_role = DEFAULT")
            conn.execute("CREATE UNIQUE INDEX measurements_reading_identity ON measurements (sensor_id, metric, timestamp)")
            conn.execute("VACUUM ANALYZE measurements")
            print(f"seeded {args.rows:,} rows in {time.monotonic() - t:.0f} s; table+indexes "
                  f"{conn.execute('SELECT pg_size_pretty(pg_total_relation_size(%s))', ('measurements',)).fetchone()[0]}")
            expired = conn.execute("SELECT count(*) FROM measurements WHERE timestamp < %s",
                                   ((now - timedelta(days=30)).replace(tzinfo=None),)).fetchone()[0]

            writer = Writer(params, args.write_rate)
            writer.start()
            time.sleep(2)
            base_without = writer.window(args.window_s)
            print(describe("writes, no retention running, without the time index", base_without, args.window_s))
            # CONCURRENTLY, as operators should on a live table; then let the writer settle before measuring.
            conn.execute("CREATE INDEX CONCURRENTLY measurements_timestamp ON measurements (timestamp)")
            time.sleep(3)
            base_with = writer.window(args.window_s)
            print(describe("writes, no retention running, with the time index", base_with, args.window_s))
            time.sleep(1)

            batches: list[tuple[int, float]] = []
            writer.latencies.clear()
            target = Target("measurements", "measurements", "timestamp", 30.0)
            result = expire(conn, target, now, args.batch, on_batch=lambda n, s: batches.append((n, s)))
            during = list(writer.latencies)
            writer.stop.set()
            writer.join(10)
            times = [s for _, s in batches]
            print(f"retention: deleted {result.rows:,} of {expired:,} expired rows in {result.seconds:.1f} s = "
                  f"{result.rows / result.seconds:,.0f} rows/s; {len(batches)} batches of {args.batch:,}: "
                  f"mean {statistics.mean(times) * 1000:.0f} ms, p50 {pct(times, 0.5) * 1000:.0f} ms, "
                  f"p99 {pct(times, 0.99) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")
            print(describe("writes while retention ran", during, result.seconds))
            t = time.monotonic()
            conn.execute("VACUUM measurements")
            print(f"VACUUM afterwards: {time.monotonic() - t:.1f} s")
            empty = time.monotonic()
            again = expire(conn, target, now, args.batch)
            print(f"next pass with nothing to delete: {again.rows} rows, {(time.monotonic() - empty) * 1000:.1f} ms")
    finally:
        with psycopg.connect(**conninfo(settings.config.postgres, settings.secrets.postgres_password, "postgres"),
                             autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
