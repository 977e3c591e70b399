"""Rebuild `aggregations` from `measurements`: after restoring readings, changing `aggregation.periods` or
correcting readings.

    python -m pipeline.tools.rebuild --from 2026-11-01 --to 2026-11-08 [--sensor ID] [--period 1m] [--config PATH]

Every window of every configured period (or only `--period`) overlapping [from, to) is recomputed and
written with the daemon's own upsert (operators/windows/store.py: UPSERT_WINDOW_ROWS, the window start taken per
row), in chunks of whole windows (`--chunk-s`, an hour of event time by default), each one statement and one
transaction: the work is bounded by one chunk's readings, and the daemon keeps running (a window it closes
meanwhile is computed from the same committed readings). Periods go shortest first and a longer one
is rolled up from the shorter one that divides it, as the daemon does, so the rows equal the daemon's;
with `--period` alone the period is computed from the readings. Windows without readings get no row (and an
existing row there is left alone). Times are UTC.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Iterator

import psycopg

from .aggregator import rollup_sources
from .store import MEAN_VALUE, UPSERT_WINDOW_ROWS
from .tracker import parse_period

# The daemon's upsert (operators/windows/store.py), with the window start taken per row: one statement writes every
# window of a chunk. Built from the daemon's text, so a change there is a change here (or a loud failure).
_DAEMON_ROW_START = "%(start)s FROM src"
assert _DAEMON_ROW_START in UPSERT_WINDOW_ROWS, "operators/windows/store.py changed its upsert: update pipeline/operators/windows/rebuild.py"
UPSERT_CHUNK_ROWS = UPSERT_WINDOW_ROWS.replace(_DAEMON_ROW_START, "window_start FROM src")
# Windows are aligned to the epoch, as the daemon's (operators/windows/tracker.py: ts - ts % size).
_WINDOW_START = "date_bin(%(size)s, {column}, TIMESTAMP '1970-01-01')"
FROM_READINGS = """
WITH src AS (
    SELECT sensor_id, metric, """ + _WINDOW_START.format(column="timestamp") + """ AS window_start,
           """ + MEAN_VALUE + """ AS avg_value, min(value) AS min_value, max(value) AS max_value, count(*)::int AS count
      FROM measurements m WHERE timestamp >= %(start)s AND timestamp < %(end)s {sensor}
     GROUP BY 1, 2, 3)""" + UPSERT_CHUNK_ROWS
# The daemon's rollup (CLOSE_FROM_ROLLUP), for every key of every window of the chunk.
FROM_ROLLUP = """
WITH src AS (
    SELECT a.sensor_id, a.metric, """ + _WINDOW_START.format(column="a.timestamp") + """ AS window_start,
           (sum(a.avg_value::text::numeric * a.count) / sum(a.count))::float8 AS avg_value,
           min(a.min_value) AS min_value, max(a.max_value) AS max_value, sum(a.count)::int AS count
      FROM aggregations a WHERE a.period = %(sub_period)s AND a.timestamp >= %(start)s AND a.timestamp < %(end)s {sensor}
     GROUP BY 1, 2, 3)""" + UPSERT_CHUNK_ROWS
DEFAULT_CHUNK_S = 3600


@dataclass(frozen=True)
class Step:
    """The windows of one period in [start, end), recomputed by one statement; sub_period set: rolled up from
    that period's rows."""

    period: str
    start: datetime
    end: datetime
    size_s: int
    sub_period: str | None = None

    @property
    def windows(self) -> int:
        return int((self.end - self.start).total_seconds()) // self.size_s


def chunks(start: datetime, end: datetime, size_s: int, chunk_s: int) -> Iterator[tuple[datetime, datetime]]:
    """[start, end) widened to whole epoch-aligned windows of `size_s`, cut into chunks of whole windows of
    about `chunk_s` (at least one window each)."""
    step = timedelta(seconds=size_s)
    epoch = datetime(1970, 1, 1)
    lo = epoch + step * ((start - epoch) // step)
    last = epoch + step * -((epoch - end) // step)  # the end of the window holding end's last instant
    per_chunk = step * max(1, chunk_s // size_s)
    while lo < last:
        yield lo, min(lo + per_chunk, last)
        lo += per_chunk


def plan(periods: tuple[str, ...], only: str | None, start: datetime, end: datetime,
         chunk_s: int = DEFAULT_CHUNK_S) -> list[Step]:
    """Every chunk to recompute, in order: shortest period first, so rollups read rebuilt rows."""
    if only is not None:
        size = parse_period(only)
        return [Step(only, lo, hi, size) for lo, hi in chunks(start, end, size, chunk_s)]
    sizes = {p: parse_period(p) for p in periods}
    rollup = rollup_sources(sizes)
    return [Step(p, lo, hi, sizes[p], rollup.get(p)) for p in sorted(sizes, key=sizes.get)
            for lo, hi in chunks(start, end, sizes[p], chunk_s)]


def statement(step: Step, sensor: str | None) -> tuple[str, dict]:
    params = {"period": step.period, "start": step.start, "end": step.end, "sub_period": step.sub_period,
              "sensor": sensor, "size": timedelta(seconds=step.size_s)}
    template = FROM_ROLLUP if step.sub_period else FROM_READINGS
    column = "a.sensor_id" if step.sub_period else "sensor_id"
    return template.format(sensor=f"AND {column} = %(sensor)s" if sensor else ""), params


@dataclass
class Progress:
    """Windows done, rows written and readings read so far."""

    windows: int = 0
    rows: int = 0
    readings: int = 0


def rebuild(conn: psycopg.Connection, steps: list[Step], sensor: str | None = None,
            on_step: Callable[[Progress], None] | None = None) -> Progress:
    """Run the steps, each its own transaction (conn in autocommit)."""
    done = Progress()
    for step in steps:
        sql, params = statement(step, sensor)
        rows = conn.execute(sql, params).fetchall()
        done.windows += step.windows
        done.rows += len(rows)
        if step.sub_period is None:
            done.readings += sum(r[5] for r in rows)
        if on_step is not None:
            on_step(done)
    return done
