"""python -m pipeline.tools.retention [--config PATH] [--dry-run]: one retention pass now (pipeline/storage/retention.py),
or with --dry-run what it would remove, per table and stream."""
from __future__ import annotations

import argparse
import sys

from ..config import load_for_cli
from ..storage.retention import run_once, targets
from .progress import Progress


def main(argv: list[str] | None = None) -> int:
    """CLI: one retention pass now, or with --dry-run what it would delete."""
    p = argparse.ArgumentParser(prog="python -m pipeline.tools.retention", description="Remove data older than the retention limits.")
    p.add_argument("--config", help="config file (default: config.yaml)")
    p.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    args = p.parse_args(argv)
    settings = load_for_cli(args.config)
    with Progress("retention", len(targets(settings.config.retention)), "targets") as bar:
        deleted = [0]

        def on_batch(rows: int, _seconds: float) -> None:
            deleted[0] += rows
            bar.update(0, rows=deleted[0])

        def on_target(result) -> None:
            deleted[0] = 0
            bar.update(1, target=result.name, rows=result.rows)

        run = run_once(settings, dry_run=args.dry_run, on_batch=on_batch, on_target=on_target)
    if run is None:
        print("another instance is running retention now; nothing done", file=sys.stderr)
        return 1
    verb = "would delete" if args.dry_run else "deleted"
    for r in run.results:
        if r.skipped:
            print(f"{r.name:<18} skipped ({r.skipped})")
        else:
            about = "about " if r.estimated else ""
            dropped = f"; partitions {'that would be ' if args.dry_run else ''}dropped whole: {', '.join(r.partitions)}" \
                if r.partitions else ""
            print(f"{r.name:<18} {verb} {about}{r.rows} row(s) older than {r.cutoff:%Y-%m-%d %H:%M:%S}  "
                  f"({r.seconds:.2f} s){dropped}")
    for stream, n in run.streams.items():
        print(f"stream {stream:<11} {verb} {n} entr{'y' if n == 1 else 'ies'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
