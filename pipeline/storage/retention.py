"""Retention: old rows and stream entries are removed in short batches, table by table.

    python -m pipeline.tools.retention [--config PATH] [--dry-run]

Each target is (table, time column, age limit, extra condition); adding a table is one line in
`targets()`. A missing table (e.g. `logs` before its migration) is skipped. Raw readings go after 30 days
by default while aggregations keep years: history queries read `aggregations`, which outlive them.
A partitioned table (`measurements`, `logs`: pipeline/storage/partitions.py) loses whole partitions: detached and
dropped once wholly older than the limit, in well under a second whatever their size. Other tables'
deletes are `DELETE ... WHERE ctid = ANY(ARRAY(SELECT ctid ... LIMIT batch_size))` in autocommit, so each batch is
its own short transaction and concurrent writes never wait long. Several instances may run the job:
a PostgreSQL advisory lock lets one of them work at a time.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import psycopg

from . import partitions
from ..config import RedisConfig, RetentionConfig, Settings
from ..clients.postgres import conninfo

log = logging.getLogger(__name__)

# Any constant, shared by every instance of one database: only the holder runs retention.
ADVISORY_LOCK_ID = 7_240_001


@dataclass(frozen=True)
class Target:
    """One kind of row to expire: rows of `table` whose `time_column` is older than `days`."""

    name: str
    table: str
    time_column: str
    days: float
    where: str = ""  # extra SQL condition: constants of this module only, never user text
    params: tuple = ()


def targets(cfg: RetentionConfig) -> list[Target]:
    """Everything retention looks after, from config; a limit of 0 keeps that data forever."""
    out = [Target("measurements", "measurements", "timestamp", cfg.measurements_days)]
    for period, days in sorted(cfg.aggregations_days.items()):
        out.append(Target(f"aggregations_{period}", "aggregations", "timestamp", days, "period = %s", (period,)))
    out += [
        Target("alerts", "alerts", "resolved_at", cfg.alerts_days, "resolved"),
        # An alert's history goes with the alert (events of alerts still kept stay, however old).
        Target("alert_events", "alert_events", "timestamp", cfg.alerts_days,
               "NOT EXISTS (SELECT 1 FROM alerts a WHERE a.id = alert_events.alert_id)"),
        Target("logs", "logs", "timestamp", cfg.logs_days),
    ]
    return [t for t in out if t.days > 0]


def cutoff(now: datetime, days: float) -> datetime:
    """The oldest time kept (naive UTC, as the tables store it)."""
    return (now - timedelta(days=days)).replace(tzinfo=None)


@dataclass
class Result:
    """What one target's pass did (or, in a dry run, would do)."""

    name: str
    cutoff: datetime
    rows: int = 0
    batches: int = 0
    seconds: float = 0.0
    skipped: str = ""
    partitions: list[str] = field(default_factory=list)  # dropped whole (or, in a dry run, that would be)
    estimated: bool = False  # rows of a dropped partition taken from the planner's statistics


@dataclass
class RetentionRun:
    """All results of one pass, PostgreSQL and Redis."""

    results: list[Result] = field(default_factory=list)
    streams: dict[str, int] = field(default_factory=dict)


def _table_exists(conn: psycopg.Connection, table: str, column: str | None = None) -> bool:
    if column is None:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]
    return conn.execute("SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
                        " AND table_name = %s AND column_name = %s)", (table, column)).fetchone()[0]


def _pending_floor(conn: psycopg.Connection) -> datetime | None:
    """Raw readings of windows not yet folded into `aggregations` must stay: the window is computed from them."""
    if not _table_exists(conn, "aggregation_pending"):
        return None
    return conn.execute("SELECT min(window_start) FROM aggregation_pending").fetchone()[0]


def expire(conn: psycopg.Connection, target: Target, now: datetime, batch_size: int, dry_run: bool = False,
           stop: threading.Event | None = None, on_batch=None) -> Result:
    """Delete (or count, when dry_run) the target's expired rows: whole partitions of a partitioned table,
    batch by batch otherwise."""
    result = Result(target.name, cutoff(now, target.days))
    if not _table_exists(conn, target.table, target.time_column):
        result.skipped = "no_table"
        return result
    if target.table == "measurements":
        floor = _pending_floor(conn)
        if floor is not None and floor < result.cutoff:
            result.cutoff = floor
    started = time.monotonic()
    if not target.where and partitions.is_partitioned(conn, target.table):
        _expire_partitions(conn, target, result, batch_size, dry_run, stop, on_batch)
    else:
        _delete_rows(conn, target.table, target, result, batch_size, dry_run, stop, on_batch)
    result.seconds = time.monotonic() - started
    return result


def _delete_rows(conn: psycopg.Connection, table: str, target: Target, result: Result, batch_size: int, dry_run: bool,
                 stop: threading.Event | None, on_batch) -> None:
    cond = f"{target.time_column} < %s" + (f" AND {target.where}" if target.where else "")
    params = (result.cutoff, *target.params)
    if dry_run:
        result.rows += conn.execute(f"SELECT count(*) FROM {table} WHERE {cond}", params).fetchone()[0]
        return
    # By physical row address (a TID scan, no second index lookup), so any table works, with or without an id.
    sql = f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {cond} LIMIT %s))"
    while not (stop is not None and stop.is_set()):
        batch_started = time.monotonic()
        deleted = conn.execute(sql, (*params, batch_size)).rowcount
        if on_batch is not None:  # the benchmark times each batch
            on_batch(deleted, time.monotonic() - batch_started)
        result.rows += deleted
        result.batches += 1
        if deleted < batch_size:
            break


def _expire_partitions(conn: psycopg.Connection, target: Target, result: Result, batch_size: int, dry_run: bool,
                       stop: threading.Event | None, on_batch) -> None:
    """Partitions wholly older than the cutoff are detached and dropped; only the old table attached by
    migration 0007 is trimmed row by row while it straddles the cutoff (partitions.expired says why)."""
    whole, straddling = partitions.expired(partitions.existing(conn, target.table), result.cutoff)
    for part in whole:
        if stop is not None and stop.is_set():
            return
        rows, exact = _rows_in(conn, part.name, dry_run)
        result.estimated = result.estimated or not exact
        if not dry_run:
            with conn.transaction():
                # Detaching locks the table briefly: never queue behind a long query with inserts queued behind us.
                conn.execute(f"SET LOCAL lock_timeout = '{partitions.LOCK_TIMEOUT}'")
                conn.execute(f'ALTER TABLE {target.table} DETACH PARTITION "{part.name}"')
                conn.execute(f'DROP TABLE "{part.name}"')
            log.info("event=partition_dropped table=%s partition=%s rows=%d", target.table, part.name, rows)
        result.rows += rows
        result.partitions.append(part.name)
    if straddling is not None:
        _delete_rows(conn, f'"{straddling.name}"', target, result, batch_size, dry_run, stop, on_batch)


def _rows_in(conn: psycopg.Connection, table: str, exact: bool) -> tuple[int, bool]:
    """Rows of a partition about to go: counted for a dry run, else the planner's estimate (a count would read
    the whole partition we are about to drop) unless the partition was never analysed."""
    if not exact:
        estimate = conn.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                                (f'"{table}"',)).fetchone()[0]
        if estimate >= 0:
            return estimate, False
    return conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0], True


def trim_streams(client, cfg: RedisConfig, max_age_s: float, now: float, dry_run: bool = False) -> dict[str, int]:
    """XTRIM MINID on every pipeline stream: entries older than max_age_s (entry ids are milliseconds)."""
    if max_age_s <= 0:
        return {}
    minid = f"{int((now - max_age_s) * 1000)}-0"
    out = {}
    for name in (cfg.streams.readings, cfg.streams.aggregations, cfg.streams.alerts):
        key = cfg.key_prefix + name
        if dry_run:
            out[key] = len(client.xrange(key, "-", f"({minid}", count=cfg.stream_maxlen))
        else:
            out[key] = client.xtrim(key, minid=minid, approximate=False)
    return out


def run_once(settings: Settings, dry_run: bool = False, stop: threading.Event | None = None,
             now: datetime | None = None, redis_client=None, on_batch=None, on_target=None) -> RetentionRun | None:
    """One pass over every target. None when another instance holds the retention lock. `on_batch(rows, seconds)`
    hears each DELETE batch, `on_target(result)` each target done (the command's progress)."""
    cfg = settings.config
    now = now or datetime.now(timezone.utc)
    run = RetentionRun()
    with psycopg.connect(**conninfo(cfg.postgres, settings.secrets.postgres_password,
                                   statement_timeout_ms=cfg.postgres.maintenance_statement_timeout_ms), autocommit=True) as conn:
        if not dry_run and not conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_ID,)).fetchone()[0]:
            return None
        for target in targets(cfg.retention):
            run.results.append(expire(conn, target, now, cfg.retention.batch_size, dry_run, stop, on_batch))
            if on_target is not None:
                on_target(run.results[-1])
    if redis_client is None:
        from ..clients.redis import connect

        redis_client = connect(cfg.redis, settings.secrets.redis_password)
    run.streams = trim_streams(redis_client, cfg.redis, cfg.retention.redis_max_age_s, now.timestamp(), dry_run)
    return run


class RetentionJob:
    """The daemon's periodic retention pass: soon after start, then every retention.interval_s."""

    FIRST_RUN_DELAY_S = 5.0

    def __init__(self, settings: Settings, metrics):
        self.settings = settings
        self.metrics = metrics

    def run(self, stop: threading.Event) -> None:
        """Worker body; a failed pass is logged and counted, and tried again next interval."""
        delay = self.FIRST_RUN_DELAY_S
        while not stop.wait(delay):
            delay = self.settings.config.retention.interval_s
            try:
                run = run_once(self.settings, stop=stop)
            except Exception as err:  # noqa: BLE001 - retention is not worth stopping the pipeline for
                self.metrics.retention_runs.labels("failed").inc()
                log.error("event=retention_failed error=%r", str(err)[:300])
                continue
            if run is None:
                self.metrics.retention_runs.labels("skipped").inc()
                log.info("event=retention_skipped reason=another_instance_holds_the_lock")
                continue
            self.metrics.retention_runs.labels("ok").inc()
            self.metrics.retention_last_success.set(time.time())
            for r in run.results:
                self.metrics.retention_deleted.labels(r.name).inc(r.rows)
                self.metrics.retention_partitions_dropped.labels(r.name).inc(len(r.partitions))
                if r.rows or r.partitions:
                    log.info("event=retention_deleted target=%s rows=%d batches=%d partitions_dropped=%d seconds=%.2f "
                             "cutoff=%s", r.name, r.rows, r.batches, len(r.partitions), r.seconds, r.cutoff.isoformat())
            for stream, n in run.streams.items():
                self.metrics.retention_deleted.labels("redis_stream").inc(n)
