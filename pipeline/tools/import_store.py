"""Where `python -m pipeline.tools.import` writes: readings in bulk through the PostgreSQL sink's own staging COPY
(so a reading already stored, by its identity sensor, metric and event time, is skipped, never doubled), the
sensors they need, the partitions they need, and a checkpoint per file in the same transaction as the rows.

The checkpoint (table `import_checkpoints`, made on first use) is keyed by the file's path, size and modification
time, and holds the byte offset and line number after the last committed batch: an import stopped by Ctrl-C, a
crash or SIGKILL starts again there; a file that changed is a new file (read again from the start; what is
already stored is skipped).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Sequence

import psycopg

from ..records import Reading
from ..sinks.postgres import COPY_STAGE, CREATE_STAGE, INSERT_FROM_STAGE
from ..storage import partitions
from ..storage.sensor_rows import INSERT_SENSORS

CREATE_CHECKPOINTS = """
CREATE TABLE IF NOT EXISTS import_checkpoints (
    path TEXT NOT NULL,
    size BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    byte_offset BIGINT NOT NULL DEFAULT 0,
    line_no BIGINT NOT NULL DEFAULT 0,
    stored BIGINT NOT NULL DEFAULT 0,
    duplicates BIGINT NOT NULL DEFAULT 0,
    bad BIGINT NOT NULL DEFAULT 0,
    min_ts DOUBLE PRECISION,
    max_ts DOUBLE PRECISION,
    done BOOLEAN NOT NULL DEFAULT false,
    rebuilt BOOLEAN NOT NULL DEFAULT false,
    updated_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    PRIMARY KEY (path, size, mtime_ns))"""
CHECKPOINT_COLUMNS = "byte_offset, line_no, stored, duplicates, bad, min_ts, max_ts, done, rebuilt"
SAVE = """
INSERT INTO import_checkpoints AS c (path, size, mtime_ns, byte_offset, line_no, stored, duplicates, bad, min_ts,
                                     max_ts, done)
VALUES (%(path)s, %(size)s, %(mtime_ns)s, %(byte_offset)s, %(line_no)s, %(stored)s, %(duplicates)s, %(bad)s,
        %(min_ts)s, %(max_ts)s, %(done)s)
ON CONFLICT (path, size, mtime_ns) DO UPDATE SET byte_offset = excluded.byte_offset, line_no = excluded.line_no,
    stored = excluded.stored, duplicates = excluded.duplicates, bad = excluded.bad, min_ts = excluded.min_ts,
    max_ts = excluded.max_ts, done = excluded.done, rebuilt = false, updated_at = now() AT TIME ZONE 'utc'"""
TO_REBUILD = "SELECT min(min_ts), max(max_ts) FROM import_checkpoints WHERE done AND NOT rebuilt AND min_ts IS NOT NULL"
MARK_REBUILT = "UPDATE import_checkpoints SET rebuilt = true WHERE done AND NOT rebuilt"


@dataclass
class FileKey:
    """A file as the checkpoint knows it: real path, size and modification time (ns)."""

    path: str
    size: int
    mtime_ns: int


@dataclass
class Checkpoint:
    """How far a file got, and what it gave so far."""

    byte_offset: int = 0
    line_no: int = 0
    stored: int = 0
    duplicates: int = 0
    bad: int = 0
    min_ts: float | None = None
    max_ts: float | None = None
    done: bool = False
    rebuilt: bool = False
    bad_reasons: dict[str, int] = field(default_factory=dict)  # this run's only
    skipped: bool = False  # finished by an earlier run

    def widen(self, lo: float, hi: float) -> None:
        self.min_ts = lo if self.min_ts is None else min(self.min_ts, lo)
        self.max_ts = hi if self.max_ts is None else max(self.max_ts, hi)


class ImportStore:
    """One connection (autocommit; each batch its own transaction) for the whole import."""

    def __init__(self, conn: psycopg.Connection, partition_interval: str):
        self.conn = conn
        self.interval = partition_interval
        self.step_s = partitions.INTERVALS[partition_interval].total_seconds()
        self.origin_s = partitions.ORIGIN.replace(tzinfo=timezone.utc).timestamp()
        self.ranges_made: set[int] = set()  # partition numbers (since ORIGIN) known to exist
        self.known_sensors: set[str] = set()
        conn.execute(CREATE_CHECKPOINTS)
        conn.execute(CREATE_STAGE)  # a temporary table: ON COMMIT DELETE ROWS, for this connection's life

    def registered(self) -> set[str]:
        """Every sensor id of the `sensors` table."""
        return {r[0] for r in self.conn.execute("SELECT sensor_id FROM sensors")}

    def load(self, key: FileKey) -> Checkpoint:
        row = self.conn.execute(f"SELECT {CHECKPOINT_COLUMNS} FROM import_checkpoints WHERE path = %s AND size = %s "
                                "AND mtime_ns = %s", (key.path, key.size, key.mtime_ns)).fetchone()
        return Checkpoint(*row) if row else Checkpoint()

    def _partitions_for(self, readings: Sequence[Reading]) -> None:
        step, origin = self.step_s, self.origin_s
        numbers = {int((r.ts - origin) // step) for r in readings} - self.ranges_made
        if not numbers:
            return
        stamps = [datetime.fromtimestamp(origin + n * step, timezone.utc).replace(tzinfo=None) for n in numbers]
        partitions.ensure_for(self.conn, "measurements", stamps, self.interval)
        self.ranges_made |= numbers

    def write(self, key: FileKey, readings: Sequence[Reading], cp: Checkpoint) -> int:
        """Store the readings not stored yet and the checkpoint `cp` (already advanced past them), in one
        transaction; returns how many were new."""
        if readings:
            self._partitions_for(readings)
        new_sensors = {}
        for r in readings:
            if r.sensor_id not in self.known_sensors and r.sensor_id not in new_sensors:
                new_sensors[r.sensor_id] = r
        inserted = 0
        with self.conn.transaction():
            with self.conn.cursor() as cur:
                if new_sensors:
                    cur.execute(INSERT_SENSORS, (list(new_sensors), [r.sensor_type for r in new_sensors.values()],
                                                 [r.location for r in new_sensors.values()]))
                if readings:
                    with cur.copy(COPY_STAGE) as copy:
                        # As the sink writes them: ids and metrics are validated (no tab, newline or backslash).
                        copy.write("".join([f"{r.sensor_id}\t{r.metric}\t{r.value!r}\t{r.ts!r}\n" for r in readings]))
                    cur.execute(INSERT_FROM_STAGE)
                    inserted = max(0, cur.rowcount)
                    cp.stored += inserted
                    cp.duplicates += len(readings) - inserted
                    if inserted:
                        cp.widen(min(r.ts for r in readings), max(r.ts for r in readings))
                cur.execute(SAVE, {"path": key.path, "size": key.size, "mtime_ns": key.mtime_ns,
                                   "byte_offset": cp.byte_offset, "line_no": cp.line_no, "stored": cp.stored,
                                   "duplicates": cp.duplicates, "bad": cp.bad, "min_ts": cp.min_ts,
                                   "max_ts": cp.max_ts, "done": cp.done})
        self.known_sensors.update(new_sensors)
        return inserted

    def to_rebuild(self) -> tuple[float, float] | None:
        """The event-time range of every finished import whose aggregates are not rebuilt yet (this run's and
        any an earlier run was stopped before rebuilding)."""
        lo, hi = self.conn.execute(TO_REBUILD).fetchone()
        return None if lo is None else (lo, hi)

    def mark_rebuilt(self) -> None:
        self.conn.execute(MARK_REBUILT)
