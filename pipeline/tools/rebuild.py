"""python -m pipeline.tools.rebuild --from T --to T [--sensor ID] [--period 1m] [--chunk-s N] [--config PATH]:
recompute `aggregations` from `measurements` (pipeline/operators/windows/rebuild.py), with progress (pipeline/tools/progress.py:
a bar with the rate and time left on a terminal, key=value lines otherwise)."""
from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone

import psycopg

from ..clients.postgres import conninfo
from ..config import Settings, load_for_cli
from ..operators.windows.tracker import parse_period
from ..operators.windows.rebuild import DEFAULT_CHUNK_S, plan, rebuild
from ..operators.windows.rebuild import __doc__ as REBUILD_DOC
from .progress import Progress


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
    started = time.monotonic()
    with Progress("rebuild", sum(s.windows for s in steps), "windows") as bar, \
            psycopg.connect(**conninfo(cfg.postgres, settings.secrets.postgres_password,
                                       statement_timeout_ms=cfg.postgres.maintenance_statement_timeout_ms),
                            autocommit=True) as conn:
        done = rebuild(conn, steps, args.sensor,
                       lambda p: bar.update(p.windows - bar.done, rows=p.rows, readings=p.readings))
    seconds = time.monotonic() - started
    print(f"rebuilt {done.windows} window(s) of {', '.join(sorted({s.period for s in steps}))} from "
          f"{args.start:%Y-%m-%d %H:%M:%S} to {args.end:%Y-%m-%d %H:%M:%S}{' for ' + args.sensor if args.sensor else ''}: "
          f"{done.rows} row(s) written from {done.readings} reading(s) in {seconds:.1f} s "
          f"({done.readings / max(seconds, 1e-9):,.0f} readings/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
