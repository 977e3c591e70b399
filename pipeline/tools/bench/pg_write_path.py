"""Cost of the exactly-once write path: COPY into staging + INSERT ... ON CONFLICT DO NOTHING, against
plain COPY into `measurements`, through the real PostgresSink with batches of 1000.

    python -m pipeline.tools.bench.pg_write_path [--rows 200000] [--batch 1000] [--drop-index measurements_timestamp]

Uses a throwaway database (bench_pg_<random>) and drops it afterwards.
"""
from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import psycopg  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from migrations import migrate  # noqa: E402
from pipeline.config import Secrets, Settings, parse  # noqa: E402
from pipeline.observability.metrics import Metrics  # noqa: E402
from pipeline.records import Reading  # noqa: E402
from pipeline.sinks.postgres import PostgresSink  # noqa: E402


def readings(n: int, t0: float) -> list[Reading]:
    return [Reading(f"bench-{i % 500:04d}", "environment", "hall", "temperature", 20.0 + (i % 100) / 10,
                    t0 + i * 0.001, t0) for i in range(n)]


def measure(dedupe: bool, rows: list[Reading], batch: int, replay: bool, drop_index: str = "") -> float:
    db = f"bench_pg_{uuid.uuid4().hex[:8]}"
    settings = Settings(parse({"postgres": {"database": db, "deduplicate": dedupe}}, {}), Secrets.from_env({}), "bench")
    migrate(settings, out=open("/dev/null", "w"))
    if drop_index:  # what one index costs the write path (e.g. measurements_timestamp of migration 0006)
        with psycopg.connect(host="localhost", user="postgres", dbname=db, autocommit=True) as conn:
            conn.execute(f'DROP INDEX "{drop_index}"')
    sink = PostgresSink(settings.config.postgres, settings.secrets.postgres_password, settings=settings.config.sinks.postgres,
                        retry=settings.config.retry, metrics=Metrics(CollectorRegistry()), queue_max_batches=1)
    try:
        sink.start()
        chunks = [rows[i:i + batch] for i in range(0, len(rows), batch)]
        sink.write(chunks[0])  # warm-up: sensors registered, connection and staging table ready
        started = time.perf_counter()
        for chunk in chunks[1:]:
            sink.write(chunk)
        elapsed = time.perf_counter() - started
        rate = (len(rows) - len(chunks[0])) / elapsed
        if replay:  # the same readings again: what a redelivery costs
            started = time.perf_counter()
            for chunk in chunks[1:]:
                sink.write(chunk)
            replay_rate = (len(rows) - len(chunks[0])) / (time.perf_counter() - started)
            with sink.pool.connection() as conn:
                stored = conn.execute("SELECT count(*) FROM measurements").fetchone()[0]
            print(f"  replaying the same readings: {replay_rate:,.0f} rows/s; rows stored stay {stored} of {len(rows)}")
        return rate
    finally:
        sink.close()
        with psycopg.connect(host="localhost", user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--drop-index", default="", help="compare the deduplicating path with and without this index")
    args = p.parse_args()
    if args.drop_index:
        rows = readings(args.rows, time.time() - 86400)
        with_index, without = [], []
        for _ in range(args.rounds):
            with_index.append(measure(True, rows, args.batch, replay=False))
            without.append(measure(True, rows, args.batch, replay=False, drop_index=args.drop_index))
        print(f"with {args.drop_index}:    {max(with_index):,.0f} rows/s (best of {args.rounds})")
        print(f"without {args.drop_index}: {max(without):,.0f} rows/s (best of {args.rounds})")
        print(f"the index costs {100 * (1 - max(with_index) / max(without)):.0f}% of write throughput "
              f"({1e6 / max(with_index) - 1e6 / max(without):.1f} µs per row)")
        return
    rows = readings(args.rows, time.time() - 86400)
    plain, dedupe = [], []
    for r in range(args.rounds):
        plain.append(measure(False, rows, args.batch, replay=False))
        dedupe.append(measure(True, rows, args.batch, replay=(r == 0)))
    best_plain, best_dedupe = max(plain), max(dedupe)
    print(f"plain COPY:                     {best_plain:,.0f} rows/s (best of {args.rounds})")
    print(f"COPY + INSERT ON CONFLICT:      {best_dedupe:,.0f} rows/s (best of {args.rounds})")
    print(f"exactly-once write path costs:  {100 * (1 - best_dedupe / best_plain):.0f}% of plain COPY throughput "
          f"({1e6 / best_dedupe - 1e6 / best_plain:.1f} µs more per row)")


if __name__ == "__main__":
    main()
