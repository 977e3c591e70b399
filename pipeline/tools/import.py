"""python -m pipeline.tools.import --config CFG [--allow-old] [--batch N] FILE...: bring existing history in.

Each file is CSV with a header line (`sensor_id,metric,value,timestamp[,unit]`, timestamps ISO-8601 or epoch
seconds) or InfluxDB line protocol; every line goes through the live path's validation and unit conversion
(pipeline/tools/import_files.py). Readings are written in bulk with COPY, a reading already stored is skipped
(never doubled), the partitions and sensors they need are made, and a checkpoint per file lets an import stopped
by Ctrl-C or a crash go on where it stopped when run again (pipeline/tools/import_store.py). Then the aggregates of
the imported range are rebuilt (pipeline/operators/windows/rebuild.py). A bad line is reported by its number and
the import goes on; a summary ends the run. `--allow-old` lifts validation.max_age_s and the lateness limit for
this import only. (`import` is a keyword: from Python, load the module with importlib.)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import psycopg

from ..clients.postgres import conninfo
from ..config import Settings, load_for_cli
from ..operators.windows.rebuild import DEFAULT_CHUNK_S, plan, rebuild
from ..records import RawMessage
from .import_files import BadLine, Checker, csv_columns, detect_format, parse_batch, read_batches
from .import_store import Checkpoint, FileKey, ImportStore
from .progress import Progress

DEFAULT_BATCH = 50_000
CHUNK_READINGS = 200_000
SHOW_BAD = 100  # bad lines printed per file; the rest are counted by reason in the summary


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc).replace(tzinfo=None)


def file_key(path: str) -> FileKey:
    st = os.stat(path)
    return FileKey(os.path.realpath(path), st.st_size, st.st_mtime_ns)


@dataclass
class Totals:
    """Readings stored and bad lines over every file of the run (shown beside the bar)."""

    stored: int = 0
    bad: int = 0


def import_file(path: str, store: ImportStore, settings: Settings, allow_old: bool, batch: int, progress: Progress,
                totals: Totals, err=sys.stderr) -> Checkpoint:
    """One file from its checkpoint to its end; returns its checkpoint (figures of every run so far)."""
    key = file_key(path)
    cp = store.load(key)
    if cp.done:
        print(f"{path}: imported before (same size and modification time): skipped", file=err)
        progress.update(key.size)
        cp.skipped = True
        return cp
    with open(path, "rb") as f:
        first = f.readline(65536).decode("utf-8", "replace").rstrip("\r\n")
        fmt = detect_format(first)
        columns = None
        if fmt == "csv":
            columns = csv_columns(first)
            if cp.byte_offset == 0:
                cp.byte_offset, cp.line_no = f.tell(), 1
        else:
            try:  # refused now, not on every line, when it is absent
                from ..stages import line_protocol  # noqa: F401
            except ImportError:
                raise ValueError("neither a CSV header naming sensor_id,metric,value,timestamp nor line protocol "
                                 "(this version has no line-protocol parser)") from None
        if cp.line_no > 1:
            print(f"{path}: resuming after line {cp.line_no} (byte {cp.byte_offset})", file=err)
        known = store.registered() if settings.config.limits.registration == "known" else None
        checker = Checker(settings.config, allow_old, registered=known)
        source = RawMessage(mqtt_topic=f"import:{path}", payload=b"", received_at=time.time())
        shown = 0
        offset = cp.byte_offset
        progress.update(offset)
        for b in read_batches(f, cp.byte_offset, cp.line_no, batch):
            readings, bad = parse_batch(b, fmt, columns, checker, source)
            for line in bad:
                cp.bad_reasons[line.reason] = cp.bad_reasons.get(line.reason, 0) + 1
                if shown < SHOW_BAD:
                    _report(err, path, line)
                shown += 1
            cp.bad += len(bad)
            cp.byte_offset = b.end_offset
            cp.line_no = b.end_lineno
            totals.stored += store.write(key, readings, cp)
            totals.bad += len(bad)
            progress.update(b.end_offset - offset, stored=totals.stored, bad=totals.bad)
            offset = b.end_offset
        if shown > SHOW_BAD:
            print(f"{path}: {shown - SHOW_BAD} more bad line(s) not shown", file=err)
    cp.done = True
    store.write(key, [], cp)
    return cp


def _report(err, path: str, line: BadLine) -> None:
    print(f"{path}:{line.lineno}: {line.reason}" + (f": {line.detail}" if line.detail else ""), file=err)


def chunk_seconds(span_s: float, readings: int) -> int:
    """Event time per rebuild statement: about CHUNK_READINGS readings each (a year of sparse history is not 26,000
    statements of an hour), within [an hour, 30 days]."""
    return int(min(30 * 86400, max(DEFAULT_CHUNK_S, span_s * CHUNK_READINGS / max(1, readings))))


def rebuild_aggregates(store: ImportStore, settings: Settings, readings: int, err=sys.stderr) -> tuple[int, int] | None:
    """Rebuild the aggregates of every finished import not rebuilt yet; (windows, rows) or None if none."""
    cfg = settings.config
    if not cfg.aggregation.enabled:
        return None
    span = store.to_rebuild()
    if span is None:
        return None
    lo, hi = _utc(span[0]), _utc(span[1] + 1e-6)
    steps = plan(cfg.aggregation.periods, None, lo, hi, chunk_seconds(span[1] - span[0], readings))
    with Progress("rebuild", sum(s.windows for s in steps), "windows", out=err) as bar:
        seen = [0]

        def on_step(p) -> None:
            bar.update(p.windows - seen[0], rows=p.rows)
            seen[0] = p.windows

        done = rebuild(store.conn, steps, None, on_step)
    store.mark_rebuilt()
    return done.windows, done.rows


def main(argv: list[str] | None = None, settings: Settings | None = None, out=sys.stdout, err=sys.stderr) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.tools.import", description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", metavar="FILE", help="CSV (with a header line) or line-protocol files")
    p.add_argument("--config", action="append",
                   help="config file (default: config.yaml); may repeat (deep-merged in order, as the daemon does)")
    p.add_argument("--allow-old", action="store_true",
                   help="lift validation.max_age_s and the lateness limit for this import only")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH, help=f"lines per transaction (default {DEFAULT_BATCH})")
    args = p.parse_args(argv)
    missing = [f for f in args.files if not os.path.isfile(f)]
    if missing:
        p.error(f"no such file: {', '.join(missing)}")
    settings = settings or load_for_cli(args.config)
    cfg = settings.config
    days = cfg.retention.measurements_days
    if args.allow_old and cfg.retention.enabled and days > 0:
        print(f"--allow-old: raw readings older than retention.measurements_days ({days:g} days) are deleted by the "
              f"next retention run; their aggregates stay as long as retention.aggregations_days keeps each period",
              file=err)
    started = time.monotonic()
    results: dict[str, Checkpoint] = {}
    total_bytes = sum(os.path.getsize(f) for f in args.files)
    progress = Progress("import", total_bytes, "B", out=err)
    totals = Totals()
    try:
        with psycopg.connect(**conninfo(cfg.postgres, settings.secrets.postgres_password,
                                        statement_timeout_ms=cfg.postgres.maintenance_statement_timeout_ms),
                             autocommit=True) as conn:
            store = ImportStore(conn, cfg.storage.partition_interval)
            for path in args.files:
                try:
                    results[path] = import_file(path, store, settings, args.allow_old, max(1, args.batch), progress,
                                                totals, err)
                except ValueError as e:  # a header without the columns, no line-protocol parser
                    print(f"{path}: not imported: {e}", file=err)
                    results[path] = Checkpoint(bad_reasons={"file_refused": 1})
            progress.close()
            import_s = time.monotonic() - started
            rebuilt = rebuild_aggregates(store, settings, sum(cp.stored for cp in results.values()), err)
    except KeyboardInterrupt:
        progress.close()
        print("interrupted: every batch committed so far is stored; run the same command again to go on (the "
              "aggregates of the imported range are rebuilt then)", file=err)
        return 130
    summary(out, results, totals, import_s, time.monotonic() - started - import_s, rebuilt,
            days if args.allow_old and cfg.retention.enabled else 0.0)
    return 1 if any("file_refused" in cp.bad_reasons for cp in results.values()) else 0


def summary(out, results: dict[str, Checkpoint], totals: Totals, import_s: float, rebuild_s: float,
            rebuilt: tuple[int, int] | None, retention_days: float) -> None:
    """One line per file (its figures over every run that worked on it) and this run's total and rate."""
    for path, cp in results.items():
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(cp.bad_reasons.items(), key=lambda x: -x[1]))
        figures = f"{cp.stored} stored, {cp.duplicates} already stored, {cp.bad} bad line(s)"
        print(f"{path}: " + (f"skipped, imported before ({figures})" if cp.skipped else
                             figures + (f" (this run: {reasons})" if reasons else "")), file=out)
        if retention_days and cp.min_ts is not None and cp.min_ts < time.time() - retention_days * 86400:
            print(f"{path}: holds readings older than {retention_days:g} days: the next retention run deletes them "
                  "(their aggregates stay)", file=out)
    print(f"imported {len(results)} file(s): {totals.stored} reading(s) stored, {totals.bad} bad line(s) in "
          f"{import_s:.1f} s ({totals.stored / max(import_s, 1e-9):,.0f} readings/s stored)"
          + (f"; aggregates rebuilt in {rebuild_s:.1f} s: {rebuilt[0]} window(s), {rebuilt[1]} row(s)"
             if rebuilt else ""), file=out)


if __name__ == "__main__":
    sys.exit(main())
