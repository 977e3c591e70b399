"""The window operator: windows of durable readings, closed into `aggregations` rows.

It is an insert listener of the PostgreSQL sink (pipeline/sinks/postgres.py, `InsertListener`), wired by the
daemon when aggregation is enabled. Where each part runs:
- `stage`, in the sink's thread inside the readings' COPY transaction: the windows of newly stored readings
  are marked pending with them (so a window is pending exactly when readings of it are durable and its row
  is not, whatever crashes in between);
- `committed`, in the sink's thread after the commit: watermarks move, running values are published, due
  windows close;
- `tick` (processing.interval_s), `start` (with the sink's pool) and `close`, in the sink's thread: windows
  of idle partitions close;
- `partitions_assigned` / `partitions_revoked`, in the consumer thread (rebalance callbacks): hence the lock.
The window math is the tracker's (tracker.py); the SQL and Redis are the store's (store.py).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Sequence

import psycopg
from psycopg_pool import ConnectionPool

from ...config import AggregationConfig, RedisConfig, Secret
from ...observability.metrics import Metrics
from ...records import Reading
from ...runtime.idle import IdleSweep
from ...runtime.ownership import Ownership
from ...runtime.threadname import name_os_thread
from ...clients.errors import is_transient, store_message
from .store import WindowStore, close_statement
from .partials import Partials
from .tracker import US, Due, Window, WindowTracker, to_us
from ...runtime import memory

log = logging.getLogger(__name__)
PARTIALS_EVERY_S = 1.0
CLOSE_SLICE = 1000  # keys of due windows closed in one transaction while readings flow
CLOSE_BUDGET_S = 0.05  # a call closes slices while it has spent less than this (the first one always)
CLOSE_PAUSE = 1.0  # ... then none for this many times the time spent: closing takes at most half the thread
AGAIN_S = 0.2  # with due windows left, the sink ticks again this soon (a quiet partition's windows close on ticks)
# What `stage` marked pending, for `committed`: (partition, window) -> its (sensor_id, metric) keys.
Staged = dict[tuple[int, Window], dict[tuple[str, str], None]]


def rollup_sources(sizes: dict[str, int]) -> dict[str, str]:
    """period -> the longest shorter configured period that divides it (its rows are what it is rolled up from)."""
    out = {}
    for period, size in sizes.items():
        divisors = [(s, p) for p, s in sizes.items() if s < size and size % s == 0]
        if divisors:
            out[period] = max(divisors)[1]
    return out


class WindowAggregator:
    """Marks windows pending with the readings, closes them by watermark or idle timeout, publishes partials."""

    def __init__(self, cfg: AggregationConfig, redis_cfg: RedisConfig, redis_password: Secret, metrics: Metrics,
                 clock=time.time, state_idle_s: float = 86400.0):
        self.cfg = cfg
        self.metrics = metrics
        self.clock = clock
        # Running values of series silent this long (limits.state_idle_s) are released; Redis expires theirs too.
        self.idle_s = state_idle_s
        self.idle_sweep = IdleSweep(state_idle_s)
        self.store = WindowStore(redis_cfg, redis_password, state_idle_s)
        self.tracker = WindowTracker(cfg.periods, cfg.grace_s, cfg.idle_close_s)
        self.partials = Partials(self.tracker)
        self.rollup_from = rollup_sources(self.tracker.sizes)
        # Windows found pending in the database (at start or on a partition's assignment) are closed from
        # the readings: what was stored before we owned them may predate a shorter period's rows.
        self.from_readings: set[Window] = set()
        # Partials go to Redis at most every PARTIALS_EVERY_S, for every sensor touched since: the dashboard
        # polls every second or two, and publishing per batch cost more than storing the readings.
        self._touched: dict[str, set[str]] = {}
        self._next_partials = 0.0
        self._publisher: threading.Thread | None = None  # publishes them once started; until then, the writes do
        self._stopping = threading.Event()
        self._resume_closing = 0.0  # monotonic: no slice before this while readings flow (CLOSE_PAUSE)
        self._wake = threading.Event()  # set by a write once PARTIALS_EVERY_S has passed: publish now
        # Rebalance callbacks run in the consumer thread, closing in the PostgreSQL sink's: one at a time.
        self.lock = threading.RLock()
        self.ownership = Ownership()

    def start(self, pool: ConnectionPool) -> None:
        """Reload the pending windows (the state a crash must not lose) and their running values."""
        self.store.start(pool)
        self.tracker.reset_pending()
        loaded = self._load(None)
        if self._publisher is None:
            self._publisher = threading.Thread(target=self._publish_partials, name="window-partials", daemon=True)
            self._publisher.start()
        log.info("event=aggregation_started periods=%s grace_s=%g pending_windows=%d", ",".join(self.tracker.sizes),
                 self.cfg.grace_s, loaded)

    def _load(self, partitions: set[int] | None) -> int:
        """Pending windows (all, or of these partitions) and their running values, from the database."""
        now = self.clock()
        pending, seeds = self.store.load_pending(partitions)
        # Every pending window is closed, even of a period no longer configured: its readings were promised a row.
        for period, start, end, sensor_id, metric, partition in pending:
            window = Window(period, to_us(start), to_us(end))
            self.tracker.load(partition, window, sensor_id, metric, now)
            self.from_readings.add(window)
        for sensor_id, metric, period, start, end, count, mean, lo, hi in seeds:
            if period in self.tracker.sizes:
                self.partials.seed(sensor_id, metric, Window(period, to_us(start), to_us(end)), count, mean * count, lo, hi,
                                   now)
        self.metrics.windows_pending.set(self.tracker.pending_count())
        return len(pending)

    # -- partition ownership (scale-out) -------------------------------------------------------
    def partitions_assigned(self, partitions: set[int]) -> None:
        """Rebuild the windows of newly owned partitions from aggregation_pending; forget the others (they stay
        pending in the database: their new owner loads and closes them)."""
        with self.lock:
            to_drop, to_load = self.ownership.assign(partitions)
            if to_drop is None:
                self.tracker.forget_partitions(lambda p: p not in partitions)
            elif to_drop:
                self.tracker.forget_partitions(lambda p: p in to_drop)
            if to_load and self.store.pool is not None:
                n = self._load(to_load)
                log.info("event=aggregation_partitions_loaded partitions=%s pending_windows=%d",
                         ",".join(map(str, sorted(to_load))), n)

    def partitions_revoked(self, partitions: set[int]) -> None:
        """Hand off: the next owner closes these partitions' windows."""
        with self.lock:
            gone = self.ownership.revoke(partitions)
            self.tracker.forget_partitions(lambda p: p in gone)
            self.metrics.windows_pending.set(self.tracker.pending_count())

    # -- inside the readings' transaction ------------------------------------------------------
    def stage(self, cur: psycopg.Cursor, records: Sequence[Reading], inserted: Sequence[tuple]) -> Staged:
        """Record the windows of newly stored readings as pending; returns them for `committed`, grouped by
        (partition, window): a reading's (sensor, metric) is one tuple shared by its windows, not a tuple per
        window (a flood's batch of 50,000 readings held 200,000 of them and as many Windows until the commit)."""
        partition_of = {r.sensor_id: (r.source.partition if r.source is not None else -1) for r in records}
        new: Staged = self.tracker.not_pending(inserted, partition_of)
        self.store.mark_pending(cur, ((p, w, s, m) for (p, w), keys in new.items() for s, m in keys))
        return new

    # -- after the commit ----------------------------------------------------------------------
    def committed(self, records: Sequence[Reading], inserted: Sequence[tuple], staged: Staged) -> None:
        """The readings are durable: move watermarks, note pending windows, publish partials, close what is due.
        Never raises: whatever fails stays pending in the database and is retried on the next batch or tick."""
        with self.lock:
            self._committed(records, inserted, staged)

    def _committed(self, records: Sequence[Reading], inserted: Sequence[tuple], staged: Staged) -> None:
        now = self.clock()
        tracker = self.tracker
        owns = self.ownership.owns
        # A batch that finished while its partition was being revoked: the next owner has its windows now.
        staged = {pw: keys for pw, keys in staged.items() if pw[0] < 0 or owns(pw[0])}
        records = [r for r in records if r.source is None or owns(r.source.partition)]
        self.partials.add_rows(inserted, now)
        touched = self._touched
        for sensor_id, metric, _value, _ts in inserted:
            metrics = touched.get(sensor_id)
            if metrics is None:
                touched[sensor_id] = {metric}
            else:
                metrics.add(metric)
        for (partition, w), keys in staged.items():
            if tracker.is_closed(partition, w):
                self.metrics.window_corrections.labels(w.period).inc(len(keys))
            for sensor_id, metric in keys:
                tracker.add(partition, w, sensor_id, metric)
        newest: dict[int, float] = {}  # the watermark moves once per partition and batch
        for r in records:
            partition = r.source.partition if r.source is not None else -1
            if r.ts > newest.get(partition, -1.0):
                newest[partition] = r.ts
        for partition, ts in newest.items():
            tracker.observe(partition, round(ts * US), now)
        if self._publisher is None:
            self.flush_partials(now)
        elif now >= self._next_partials:
            self._wake.set()
        self.close_due()

    def flush_partials(self, now: float) -> None:
        """Publish the running values touched since the last time, if PARTIALS_EVERY_S has passed. They are
        copied under the lock and formatted and sent outside it (by the publishing thread, once started)."""
        with self.lock:
            if not self._touched or now < self._next_partials:
                return
            touched, self._touched = self._touched, {}
            self._next_partials = now + PARTIALS_EVERY_S
            copies = [(sensor_id, self.partials.copies(sensor_id, metrics)) for sensor_id, metrics in touched.items()]
        encode = self.partials.encode
        fields = ((sensor_id, encode(series)) for sensor_id, series in copies)
        self._guard("publish_partials", lambda: self.store.publish_partials(fields, now))

    def _publish_partials(self) -> None:
        """The publishing thread: the partials every PARTIALS_EVERY_S, off the PostgreSQL sink's thread (a
        profile of a 20,000-sensor fleet had a third of that thread's wall time in them)."""
        name_os_thread("window-partials")
        while not self._stopping.is_set():
            self._wake.wait(PARTIALS_EVERY_S)
            self._wake.clear()
            self.flush_partials(self.clock())

    def tick(self) -> float | None:
        """Timed work: windows whose partition went quiet close (the watermark only moves with readings).
        Returns seconds until the next tick is wanted, sooner than usual while due windows remain."""
        return AGAIN_S if self.close_due() else None

    def close_due(self) -> bool:
        """Write the rows of the windows that are due; called after each write and on the tick. A minute's
        windows of tens of thousands of series are closed CLOSE_SLICE keys at a time, for at most CLOSE_BUDGET_S
        per call and then not for CLOSE_PAUSE times as long: the readings' writes (this runs in the PostgreSQL
        sink's thread) pass between the slices instead of waiting for all of them (`--fleet` in
        pipeline/tools/bench). True if due windows remain."""
        more = False
        if self._publisher is None:
            self.flush_partials(self.clock())
        with self.lock:
            started = time.monotonic()
            if started < self._resume_closing and self.tracker.taking_readings(self.clock()):
                return True  # the readings' turn (CLOSE_PAUSE)
            while True:
                # Only windows of partitions we own: two instances closing one window would race on its pending rows.
                # While no partition is taking readings (a flood passed, a quiet night) there is nothing to let
                # through: whole windows, each in one pass over its time.
                now = self.clock()
                limit = CLOSE_SLICE if self.tracker.taking_readings(now) else None
                due = self.tracker.due(now, limit, self.ownership.owns)
                if not due or not self._guard("close_windows", lambda: self._close(due)):
                    break
                more = limit is not None and sum(len(d.keys) for d in due) >= limit
                if not more or time.monotonic() - started >= CLOSE_BUDGET_S:
                    break
            if more:
                ended = time.monotonic()
                self._resume_closing = ended + CLOSE_PAUSE * (ended - started)
            self.metrics.windows_pending.set(self.tracker.pending_count())
            now = self.clock()
            if self.idle_sweep.due(now):
                memory.released(self.evict_idle(now), "windows")
            for partition in self.tracker.max_event:
                wm = self.tracker.watermark(partition)
                if wm is not None:
                    self.metrics.watermark.labels(str(partition)).set(wm / US)
        return more

    def evict_idle(self, now: float) -> int:
        """Release the running values of series without a reading for state_idle_s whose windows are all closed,
        but for windows that are rolled up: those stay pending as their keys alone (see `holds_state`)."""
        with self.lock:
            gone = self.partials.evict_idle(now - self.idle_s, self.tracker.pending_series(self.holds_state))
            if gone >= memory.RELEASED_FROM:  # what a flood left pending, moved out of its arenas (tracker.rebuild)
                self.tracker.rebuild()
                self.from_readings = {Window(*w) for w in self.from_readings}
            return gone

    def holds_state(self, window: Window) -> bool:
        """Whether a pending window keeps its series' running values once the series is idle. A window rolled up
        from a shorter period's rows (a day from its hours) is computed in PostgreSQL when it closes, never from
        memory, and can stay open for up to its whole length: its series is released like one with nothing
        pending (a flood of 50,000 series otherwise kept its day's state till midnight, bench/RESULTS.md). If the
        series returns before the window closes, the dashboard's partial of that window counts from its return
        (after a restart it is seeded from the readings instead); the window's row stays exact."""
        return window in self.from_readings or window.period not in self.rollup_from

    def _guard(self, what: str, fn) -> bool:
        """Run fn; False (counted and logged) if it failed."""
        try:
            fn()
            return True
        except Exception as err:  # noqa: BLE001 - the windows stay pending; a bug here must not stop the readings
            self.metrics.aggregation_errors.inc()
            if is_transient(err):  # the store is away or refuses writes (full, read-only): retried on the next tick
                log.warning("event=aggregation_retry_later step=%s error=%r", what, store_message(err))
            else:
                log.exception("event=aggregation_failed step=%s", what)
            return False

    def _close(self, due: list[Due]) -> None:
        groups: dict[Window, set[tuple[str, str]]] = {}
        for d in due:  # in closing order: a shorter window before the longer one ending with it (rollups)
            groups.setdefault(d.window, set()).update(d.keys)
        # A window closed whole (every partition's keys of it in this slice) is computed in one pass over its time.
        sliced = {(d.partition, d.window) for d in due if not d.left}
        partial = {w for (p, w) in self.tracker.pending if (p, w) not in sliced}
        closed = self.store.close([(window, *self.close_statement(window, sorted(keys), window not in partial))
                                   for window, keys in groups.items()])
        for d in due:
            self.tracker.remove(d)
        self.from_readings.difference_update(w for w in groups if w not in partial)
        rows = 0
        for window, n in closed:
            if n:
                self.metrics.windows_closed.labels(window.period).inc(n)
            rows += n
        if rows:
            log.debug("event=windows_closed windows=%d rows=%d", len(groups), rows)
        # A large closing (a flood's windows, a fleet's minute) held its rows and commands only for this call: a trim
        # follows, else the last one ran before it and its memory stayed in the C allocator's heaps.
        memory.released(rows, "windows_closed")

    def close_statement(self, window: Window, pairs: list[tuple[str, str]], whole: bool = True) -> tuple[str, dict]:
        """The statement that closes these keys of a window: rolled up from a shorter period's rows, unless the
        window was found pending in the database (its shorter rows may be missing); `whole`: all its keys."""
        sub = None if window in self.from_readings else self.rollup_from.get(window.period)
        return close_statement(window, pairs, sub, whole)

    def close(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._publisher is not None:
            self._publisher.join(5)
        self.flush_partials(float("inf"))  # the last running values
        self.store.stop()

