"""PostgreSQL sink: registers unknown sensors, then COPYs readings into `measurements`, in one transaction.

With `postgres.deduplicate` (the default) a reading already stored is skipped, so redelivery after a
crash or an MQTT resend never makes a second row.

Insert listeners (`InsertListener`, given to the constructor; the window operator of
pipeline/operators/windows/ when aggregation is enabled) are told the rows this sink really inserted: inside
the write's transaction (`stage`: what they write there commits or rolls back with the rows; raising rolls
the rows back) and after the commit (`committed`). This sink also drives their start (with its pool),
tick and close in its own thread; partition hooks come from the consumer thread.

Known sensors (registered in `sensors`) are remembered with when they last wrote, and released after
`limits.state_idle_s` without one; a released sensor that returns is registered again (ON CONFLICT DO NOTHING).
"""
from __future__ import annotations

import logging
import time
import weakref
from typing import Protocol, Sequence

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from ..storage import partitions
from ..config import PostgresConfig, Secret
from ..clients.postgres import describe, open_pool, utc_naive
from ..records import Reading
from ..runtime.batch import Batch
from ..runtime.idle import IdleSweep
from ..storage.sensor_rows import INSERT_SENSORS
from .base import BatchingSink
from ..runtime import memory

log = logging.getLogger(__name__)

# The new sensors of a batch go in with storage/sensor_rows.INSERT_SENSORS (one statement, however many).
COPY_MEASUREMENTS = "COPY measurements (sensor_id, metric, value, timestamp) FROM STDIN"
# Exactly-once effect: COPY into a per-connection staging table, then keep only readings whose
# identity (sensor_id, metric, timestamp) is not stored yet. A redelivered batch inserts nothing.
# The staging table takes event time as epoch seconds: PostgreSQL converts it in C, which is much
# cheaper than building a datetime per reading in Python.
CREATE_STAGE = ("CREATE TEMP TABLE IF NOT EXISTS measurements_stage (sensor_id VARCHAR(50), metric VARCHAR(20), "
                "value DOUBLE PRECISION, ts DOUBLE PRECISION) ON COMMIT DELETE ROWS")
COPY_STAGE = "COPY measurements_stage (sensor_id, metric, value, ts) FROM STDIN"
INSERT_FROM_STAGE = ("INSERT INTO measurements (sensor_id, metric, value, timestamp) "
                     "SELECT sensor_id, metric, value, to_timestamp(ts) AT TIME ZONE 'UTC' FROM measurements_stage "
                     "ON CONFLICT (sensor_id, metric, timestamp) DO NOTHING")
# The rows really inserted (not the duplicates skipped): exactly what is new for the windows.
# Event time comes back as integer microseconds: cheaper than a datetime per row, and what the window
# logic works in.
RETURNING_NEW = " RETURNING sensor_id, metric, value, (extract(epoch FROM timestamp) * 1000000)::bigint"
# A stored reading whose value changed (a log count that grew with late records): updated in place.
CORRECT = "UPDATE measurements SET value = %s WHERE sensor_id = %s AND metric = %s AND timestamp = %s"
# Run only when some staged readings were skipped: of those, the ones whose stored row holds another value are
# conflicts (two readings claimed one identity; the first stays), the rest are redeliveries of stored readings.
COUNT_CONFLICTS = ("SELECT count(*) FROM measurements_stage s JOIN measurements m ON m.sensor_id = s.sensor_id "
                   "AND m.metric = s.metric AND m.timestamp = to_timestamp(s.ts) AT TIME ZONE 'UTC' "
                   "WHERE m.value <> s.value")


def copy_rows(records: Sequence[Reading]) -> str:
    """The readings as text COPY rows (sensor_id, metric, value, ts epoch seconds), built directly: ids and
    metrics are validated (no tab, newline or backslash), numbers are repr() of floats. A message's readings
    share one event time object: its text is made once for them."""
    rows: list[str] = []
    append = rows.append
    last = None
    ts_text = ""
    for r in records:
        ts = r.ts
        if ts is not last:
            last, ts_text = ts, repr(ts)
        append(f"{r.sensor_id}\t{r.metric}\t{r.value!r}\t{ts_text}\n")
    return "".join(rows)


class InsertListener(Protocol):
    """Told which rows the PostgreSQL sink inserted (sensor_id, metric, value, event time in µs), in its thread."""

    def start(self, pool: ConnectionPool) -> None:
        """The sink connected: load state through its pool."""

    def stage(self, cur: psycopg.Cursor, records: Sequence[Reading], inserted: Sequence[tuple]) -> object:
        """Inside the rows' transaction: write what must commit with them; the result goes to `committed`."""

    def committed(self, records: Sequence[Reading], inserted: Sequence[tuple], staged: object) -> None:
        """The rows are durable. Must not raise: what fails is retried by the listener itself."""

    def tick(self) -> float | None:
        """The sink's tick (processing.interval_s); may return seconds until it is wanted again, if sooner."""

    def partitions_assigned(self, partitions: set[int]) -> None:
        """The consumer group's assignment (consumer thread)."""

    def partitions_revoked(self, partitions: set[int]) -> None:
        """Partitions handed to another instance (consumer thread)."""

    def close(self) -> None:
        """The sink is closing."""


class PostgresSink(BatchingSink):
    """Writes measurements with COPY through a connection pool; sensors are cached once known."""

    name = "postgres"

    def __init__(self, pg: PostgresConfig, password: Secret, *args, listeners: Sequence[InsertListener] = (),
                 tick_interval_s: float | None = None,
                 partition_interval: str = "1d", state_idle_s: float = 86400.0, clock=time.time, **kwargs):
        super().__init__(*args, **kwargs)
        self.pg = pg
        self.password = password
        self.pool: ConnectionPool | None = None
        self.known_sensors: dict[str, float] = {}  # sensor -> when a reading of it was last written
        self.clock = clock
        self.idle_s = state_idle_s
        self.idle_sweep = IdleSweep(state_idle_s)
        # Told the inserted rows (the window operator, when aggregation is enabled); ticked by this sink.
        self.listeners = tuple(listeners)
        self.tick_interval_s = tick_interval_s
        self._written: tuple | None = None  # (inserted rows, what each listener staged) of the last write
        self.partition_interval = partition_interval  # storage.partition_interval: for partitions made on demand
        # Connections whose staging table exists. It is made in a write's own transaction, not when the pool
        # connects: a read-only database then refuses the write with its own message (held, shown on /ready)
        # instead of failing every connection attempt into an anonymous pool timeout.
        self._staged: weakref.WeakSet = weakref.WeakSet()


    def accepts_stored(self) -> bool:
        """Readings already stored come again only if duplicates are skipped (postgres.deduplicate)."""
        return self.pg.deduplicate
    def start(self) -> None:
        pool = open_pool(self.pg, self.password, "postgres-sink", self.pg.pool_min, self.pg.pool_max)
        try:
            with pool.connection() as conn:
                now = self.clock()
                self.known_sensors = {row[0]: now for row in conn.execute("SELECT sensor_id FROM sensors")}
        except (psycopg.Error, PoolTimeout) as err:
            pool.close()
            raise ConnectionError(f"cannot reach {describe(self.pg)}: {err}") from err
        self.pool = pool
        log.info("event=sink_started sink=postgres target=%s known_sensors=%d", describe(self.pg), len(self.known_sensors))
        for listener in self.listeners:
            listener.start(self.pool)

    def select(self, batch: Batch) -> Sequence[Reading]:
        return batch.readings

    def write(self, records: Sequence[Reading]) -> int:
        """Returns how many readings became rows (what counts as written); the rest are counted by reason."""
        try:
            return self._write(records)
        except psycopg.errors.ForeignKeyViolation:
            # A sensor this sink knew was removed from `sensors` (python -m pipeline.sensors remove) while its
            # readings still flow: forget what the batch names, so it is registered again, and write once more.
            for sensor_id in {r.sensor_id for r in records}:
                self.known_sensors.pop(sensor_id, None)
            return self._write(records)
        except psycopg.errors.CheckViolation as err:
            if not partitions.is_missing_partition(err):
                raise
            # A reading older than every partition (or a partition not made ahead yet): make it, write again.
            made = partitions.make_for_epochs(self.pool, "measurements", [r.ts for r in records], self.partition_interval)
            self.metrics.partitions_created.labels("measurements", "on_demand").inc(len(made))
            return self._write(records)

    def _write(self, records: Sequence[Reading]) -> int:
        known = self.known_sensors
        # The batch's sensors, each once (a message's readings share one), and the first reading of each new one.
        sensors = dict.fromkeys([r.sensor_id for r in records])
        new: dict[str, Reading] = {}
        if not known.keys() >= sensors.keys():
            for r in records:
                if r.sensor_id not in known and r.sensor_id not in new:
                    new[r.sensor_id] = r
        registered = 0
        assert self.pool is not None
        with self.pool.connection() as conn:
            stage = self.pg.deduplicate and conn not in self._staged
            with conn.transaction():
                with conn.cursor() as cur:
                    if stage:
                        cur.execute(CREATE_STAGE)
                    if new:
                        cur.execute(INSERT_SENSORS, (list(new), [r.sensor_type for r in new.values()],
                                                     [r.location for r in new.values()]))
                        registered = max(0, cur.rowcount)  # not those registered before they were released
                    dedupe, listeners = self.pg.deduplicate, self.listeners
                    inserted = None
                    skipped = conflicts = 0
                    if dedupe:
                        with cur.copy(COPY_STAGE) as copy:
                            copy.write(copy_rows(records))
                        cur.execute(INSERT_FROM_STAGE + (RETURNING_NEW if listeners else ""))
                        if listeners:
                            inserted = cur.fetchall()
                        inserted_n = len(inserted) if inserted is not None else cur.rowcount
                        skipped = len(records) - inserted_n
                        if skipped:
                            conflicts = cur.execute(COUNT_CONFLICTS).fetchone()[0]
                    else:
                        with cur.copy(COPY_MEASUREMENTS) as copy:
                            for r in records:
                                copy.write_row((r.sensor_id, r.metric, r.value, utc_naive(r.ts)))
                        inserted_n = len(records)
                    if listeners:
                        if inserted is None:
                            inserted = [(r.sensor_id, r.metric, r.value, round(r.ts * 1_000_000)) for r in records]
                        # Inside the transaction: a listener's error rolls the rows back (the batch is retried).
                        self._written = (inserted, [lst.stage(cur, records, inserted) for lst in listeners])
            if stage:  # committed: the table stays for the connection's life (ON COMMIT DELETE ROWS)
                self._staged.add(conn)
        known.update(dict.fromkeys(sensors, self.clock()))
        if registered:
            self.metrics.sensors_registered.inc(registered)
        if skipped:
            if conflicts:
                self.metrics.readings_deduplicated.labels("conflict").inc(conflicts)
            if skipped > conflicts:
                self.metrics.readings_deduplicated.labels("redelivery").inc(skipped - conflicts)
        return inserted_n

    def after_write(self, records: Sequence[Reading]) -> None:
        super().after_write(records)
        written, self._written = self._written, None
        if written is not None:
            inserted, staged = written
            for listener, mine in zip(self.listeners, staged):
                listener.committed(records, inserted, mine)

    def correct(self, readings: Sequence[Reading]) -> None:
        """Stored readings take these new values, in one transaction. Called by the log counter in its own thread
        (the pool is thread-safe; start() has made it); its caller retries transient errors."""
        assert self.pool is not None
        with self.pool.connection() as conn, conn.transaction():
            conn.cursor().executemany(CORRECT, [(r.value, r.sensor_id, r.metric, utc_naive(r.ts)) for r in readings])

    def partitions_assigned(self, partitions: set[int]) -> None:
        for listener in self.listeners:
            listener.partitions_assigned(partitions)

    def partitions_revoked(self, partitions: set[int]) -> None:
        for listener in self.listeners:
            listener.partitions_revoked(partitions)

    def tick(self) -> float | None:
        """The listeners' timed work (windows of partitions that went quiet close); release sensors idle for
        state_idle_s. Returns the soonest next tick a listener asked for (None: the usual interval)."""
        soonest = None
        for listener in self.listeners:
            again = listener.tick()
            if again is not None and (soonest is None or again < soonest):
                soonest = again
        now = self.clock()
        if self.idle_sweep.due(now):
            memory.released(self.evict_idle(now), "sensors_written")
        return soonest

    def evict_idle(self, now: float) -> int:
        """Forget the sensors that wrote nothing since `now - state_idle_s` (registered again if they return)."""
        cutoff = now - self.idle_s
        gone = [s for s, seen in self.known_sensors.items() if seen < cutoff]
        for s in gone:
            del self.known_sensors[s]
        if len(gone) > len(self.known_sensors):  # a dict keeps its table when emptied: copied, it frees the memory
            self.known_sensors = dict(self.known_sensors)
        return len(gone)

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()
        if self.pool is not None:
            self.pool.close()
