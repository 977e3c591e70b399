"""python -m pipeline.tools.rebuild --from T --to T [--sensor ID] [--period 1m] [--chunk-s N] [--config PATH]:
recompute `aggregations` from `measurements` (pipeline/operators/windows/rebuild.py), with a progress bar and a rate."""
from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone

import psycopg

from ..clients.postgres import conninfo
from ..config import Settings, load_for_cli
from ..operators.windows.tracker import parse_period
from ..operators.windows.rebuild import DEFAULT_CHUNK_S, Progress, plan, rebuild
from ..operators.windows.rebuild import __doc__ as REBUILD_DOC


class Bar:
    """A one-line progress bar with rates, redrawn at most 5 times a second on stderr."""

    def __init__(self, total: int, out=sys.stderr):  # total: windows
        self.total, self.out = total, out
        self.started = self.drawn = time.monotonic()

    def __call__(self, p: Progress, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.drawn < 0.2 and p.windows < self.total:
            return
        self.drawn = now
        elapsed = max(now - self.started, 1e-9)
        share = p.windows / self.total if self.total else 1.0
        eta = elapsed / share - elapsed if share else 0.0
        filled = int(30 * share)
        self.out.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {share:6.1%} {p.windows}/{self.total} windows  "
                       f"{p.rows} rows  {p.readings / elapsed:,.0f} readings/s  eta {eta:,.0f} s ")
        self.out.flush()


def parse_time(text: str) -> datetime:
    """ISO 8601 (a date, or a time with or without offset; UTC when none) or epoch seconds -> naive UTC."""
    try:
        return datetime.fromtimestamp(float(text), timezone.utc).replace(tzinfo=None)
    except ValueError:
        pass
    dt = datetime.fromisoformat(text)
    return dt.astimezone(timezone.utc).replace(tzinfo=None) if dt.tzinfo else dt


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.tools.rebuild", description=REBUILD_DOC.splitlines()[0])
    p.add_argument("--from", dest="start", required=True, type=parse_time, help="UTC, ISO 8601 or epoch seconds")
    p.add_argument("--to", dest="end", required=True, type=parse_time, help="exclusive")
    p.add_argument("--sensor", help="only this sensor")
    p.add_argument("--period", help="only this period (e.g. 1m), computed from the readings")
    p.add_argument("--chunk-s", type=int, default=DEFAULT_CHUNK_S,
                   help=f"event time per statement and transaction (whole windows; default {DEFAULT_CHUNK_S})")
    p.add_argument("--config", help="config file (default: config.yaml)")
    args = p.parse_args(argv)
    if args.end <= args.start:
        p.error("--to must be after --from")
    if args.period is not None:
        try:
            parse_period(args.period)
        except ValueError as err:
            p.error(str(err))
    settings = settings or load_for_cli(args.config)
    cfg = settings.config
    steps = plan(cfg.aggregation.periods, args.period, args.start, args.end, max(1, args.chunk_s))
    bar = Bar(sum(s.windows for s in steps))
    started = time.monotonic()
    with psycopg.connect(**conninfo(cfg.postgres, settings.secrets.postgres_password,
                                   statement_timeout_ms=cfg.postgres.maintenance_statement_timeout_ms), autocommit=True) as conn:
        done = rebuild(conn, steps, args.sensor, bar)
    bar(done, force=True)
    seconds = time.monotonic() - started
    print(file=sys.stderr)
    print(f"rebuilt {done.windows} window(s) of {', '.join(sorted({s.period for s in steps}))} from "
          f"{args.start:%Y-%m-%d %H:%M:%S} to {args.end:%Y-%m-%d %H:%M:%S}{' for ' + args.sensor if args.sensor else ''}: "
          f"{done.rows} row(s) written from {done.readings} reading(s) in {seconds:.1f} s "
          f"({done.readings / max(seconds, 1e-9):,.0f} readings/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
