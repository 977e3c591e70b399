"""Time partitions of `measurements` and `logs`: which ranges exist, which are wanted, which have expired.

The top half is pure (ranges and names from timestamps); the bottom half reads the catalogue and runs the
DDL. Partitions are made ahead (by migrations.py and the daemon's job, `storage.partitions_ahead`), and on
demand when a write finds none for a reading: never a default partition, which would have to be scanned
and split before any later range could be attached.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable

import psycopg
from psycopg import sql

from ..config import Settings, StorageConfig
from ..clients.postgres import conninfo

log = logging.getLogger(__name__)

PARTITIONED_TABLES = ("measurements", "logs")
INTERVALS = {"1h": timedelta(hours=1), "6h": timedelta(hours=6), "1d": timedelta(days=1), "7d": timedelta(days=7)}
# Every interval is aligned to this instant: UTC midnight, a Monday (so weekly partitions start on Mondays).
ORIGIN = datetime(1970, 1, 5)
# Any constant: makers of partitions (daemons, migrations, a sink on demand) take turns.
ADVISORY_LOCK_ID = 7_240_002
# Attaching takes a brief lock on the table: give up rather than queue behind a long query (and make inserts
# queue behind us); the timer or the sink's retry tries again.
LOCK_TIMEOUT = "5s"


@dataclass(frozen=True)
class Partition:
    """One partition and its range; lower None is MINVALUE (the old table attached by migration 0007)."""

    name: str
    lower: datetime | None
    upper: datetime | None


# -- pure ------------------------------------------------------------------------------------------------
def span(ts: datetime, interval: str) -> tuple[datetime, datetime]:
    """The aligned range [lower, upper) of `interval` holding `ts` (naive UTC)."""
    step = INTERVALS[interval]
    lower = ORIGIN + step * ((ts - ORIGIN) // step)
    return lower, lower + step


def partition_name(table: str, lower: datetime, interval: str) -> str:
    """measurements_p20261201, or measurements_p20261201_06 for intervals shorter than a day."""
    suffix = f"{lower:%Y%m%d}" if INTERVALS[interval] >= timedelta(days=1) else f"{lower:%Y%m%d_%H}"
    return f"{table}_p{suffix}"


def wanted(now: datetime, interval: str, ahead: int) -> list[tuple[datetime, datetime]]:
    """The ranges to have ready: the previous one (late readings just after a boundary), the current one and
    `ahead` more."""
    step = INTERVALS[interval]
    lower, _ = span(now, interval)
    return [(lower + step * k, lower + step * (k + 1)) for k in range(-1, ahead + 1)]


def uncovered(ranges: Iterable[tuple[datetime, datetime]], existing: Iterable[Partition]) -> list[tuple[datetime, datetime]]:
    """The parts of `ranges` no existing partition covers (a range is clipped, never overlapped: the old
    table's upper bound or a changed interval need not fall on this interval's boundaries)."""
    taken = sorted((p.lower or datetime.min, p.upper or datetime.max) for p in existing)
    out = []
    for lower, upper in ranges:
        pieces = [(lower, upper)]
        for t_lo, t_hi in taken:
            pieces = [piece for lo, hi in pieces
                      for piece in ((lo, min(hi, t_lo)), (max(lo, t_hi), hi)) if piece[0] < piece[1]]
        out.extend(pieces)
    return sorted(set(out))


def expired(partitions: Iterable[Partition], cutoff: datetime) -> tuple[list[Partition], Partition | None]:
    """Partitions wholly older than `cutoff` (dropped whole), and the old unbounded-below one if it straddles
    the cutoff (trimmed row by row). A regular partition straddling the cutoff is kept until it has wholly
    expired: at most one interval longer than the limit, instead of deletes and vacuum on the ingesting cores."""
    whole, straddling = [], None
    for p in sorted(partitions, key=lambda p: p.upper or datetime.max):
        if p.upper is not None and p.upper <= cutoff:
            whole.append(p)
        elif p.lower is None and p.upper is not None:
            straddling = p
    return whole, straddling


_BOUND = re.compile(r"FROM \((MINVALUE|'([^']*)')\) TO \((MAXVALUE|'([^']*)')\)")


def parse_bound(expr: str, name: str) -> Partition:
    """A partition from pg_get_expr(relpartbound): FOR VALUES FROM ('...') TO ('...')."""
    m = _BOUND.search(expr)
    if m is None:
        raise ValueError(f"{name}: not a range partition bound: {expr}")
    lower = datetime.fromisoformat(m.group(2)) if m.group(2) else None
    upper = datetime.fromisoformat(m.group(4)) if m.group(4) else None
    return Partition(name, lower, upper)


def is_missing_partition(err: BaseException) -> bool:
    """True for an insert refused because no partition holds a row's timestamp (SQLSTATE 23514)."""
    return isinstance(err, psycopg.errors.CheckViolation) and "no partition of relation" in str(err)


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


# -- against the database --------------------------------------------------------------------------------
def is_partitioned(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (table,)).fetchone()
    return row is not None and row[0] == "p"


def existing(conn: psycopg.Connection, table: str) -> list[Partition]:
    """The table's partitions with their ranges, oldest first."""
    rows = conn.execute("SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)", (table,)).fetchall()
    return sorted((parse_bound(expr, name) for name, expr in rows), key=lambda p: p.lower or datetime.min)


def _create(conn: psycopg.Connection, table: str, lower: datetime, upper: datetime, interval: str) -> str:
    """A new empty table attached as a partition: ATTACH locks only against other DDL, so inserts into the
    table's other partitions go on (CREATE ... PARTITION OF would lock them out)."""
    name = partition_name(table, lower, interval)
    if span(lower, interval)[0] != lower:  # a clipped piece: named by its own start, to the second
        name = f"{table}_p{lower:%Y%m%d_%H%M%S}"
    ident, parent = sql.Identifier(name), sql.Identifier(table)
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)").format(ident, parent))
    conn.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
        parent, ident, sql.Literal(lower), sql.Literal(upper)))
    return name


def ensure(conn: psycopg.Connection, table: str, ranges: Iterable[tuple[datetime, datetime]], interval: str) -> list[str]:
    """Create partitions for whatever part of `ranges` none covers; returns the names made. One transaction
    under an advisory lock, so concurrent makers never race on one range."""
    made: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_ID,))
        conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        if not is_partitioned(conn, table):
            return made
        for lower, upper in uncovered(ranges, existing(conn, table)):
            made.append(_create(conn, table, lower, upper, interval))
    for name in made:
        log.info("event=partition_created table=%s partition=%s", table, name)
    return made


def ensure_ahead(conn: psycopg.Connection, cfg: StorageConfig, now: datetime | None = None) -> list[str]:
    """The previous, current and `partitions_ahead` future partitions of every partitioned table."""
    ranges = wanted(now or utc_now(), cfg.partition_interval, cfg.partitions_ahead)
    return [name for table in PARTITIONED_TABLES for name in ensure(conn, table, ranges, cfg.partition_interval)]


def ensure_for(conn: psycopg.Connection, table: str, timestamps: Iterable[datetime], interval: str) -> list[str]:
    """Partitions for these timestamps (a write found none for some of them)."""
    return ensure(conn, table, {span(ts, interval) for ts in timestamps}, interval)


def make_for_epochs(pool, table: str, epochs: Iterable[float], interval: str) -> list[str]:
    """For a sink: partitions for readings' event times in epoch seconds, through its pool."""
    stamps = {datetime.fromtimestamp(ts, timezone.utc).replace(tzinfo=None) for ts in epochs}
    with pool.connection() as conn:
        return ensure_for(conn, table, stamps, interval)


class PartitionJob:
    """The daemon's timer: partitions ahead at start, then every storage.check_interval_s."""

    def __init__(self, settings: Settings, metrics):
        self.settings = settings
        self.metrics = metrics

    def run_once(self) -> list[str]:
        cfg = self.settings.config
        with psycopg.connect(**conninfo(cfg.postgres, self.settings.secrets.postgres_password,
                                   statement_timeout_ms=cfg.postgres.maintenance_statement_timeout_ms), autocommit=True) as conn:
            made = ensure_ahead(conn, cfg.storage)
        self.metrics.partition_checks.labels("ok").inc()
        for name in made:
            self.metrics.partitions_created.labels(name.rsplit("_p", 1)[0], "ahead").inc()
        return made

    def run(self, stop: threading.Event) -> None:
        """Worker body (the daemon ran `run_once` at start); a failed check is logged and tried again within a
        minute (writes also make partitions on demand)."""
        delay = self.settings.config.storage.check_interval_s
        while not stop.wait(delay):
            delay = self.settings.config.storage.check_interval_s
            started = time.monotonic()
            try:
                self.run_once()
            except Exception as err:  # noqa: BLE001 - a missed check is made up by the next one or on demand
                self.metrics.partition_checks.labels("failed").inc()
                log.error("event=partitions_check_failed error=%r", str(err)[:300])
                delay = min(delay, 60.0)
                continue
            log.info("event=partitions_checked seconds=%.2f", time.monotonic() - started)
