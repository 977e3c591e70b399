"""Log records become numbers: per app and level, the records of each window, counted from the durable
`logs` table and handed to the sinks as ordinary readings (sensor app:<app>, metric log_<level>,
value = count, timestamp = window start), so they get aggregations, thresholds and alerts like any metric.

Why from the table: it holds exactly the records that are durable, each once (delivery identity), so a
count is the same however often it is computed: after a crash, a replay or a restart. New counts go
through the normal readings path (the PostgreSQL sink inserts them); a count that changed because
records arrived late is updated in place first (through the PostgreSQL sink's `correct`: this operator only
reads and computes), then handed on as well. (Expiring old log records is
the retention job's, pipeline/storage/retention.py.)
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Sequence

import orjson
from psycopg_pool import ConnectionPool

from ...config import LogsConfig, PostgresConfig, RetryConfig, Secret
from ...clients.errors import is_transient
from ...clients.postgres import epoch, open_pool, utc_naive
from ...observability.metrics import Metrics
from ...records import LogRecord, RawMessage, Reading
from .counting import APP_SENSOR_TYPE, CountWindows, changes, count_rows, metric
from ...stages.logs import LEVELS
from ...runtime.batch import Batch
from ...runtime.retry import retry_call

log = logging.getLogger(__name__)

SEEN = "SELECT app, min(timestamp), max(timestamp) FROM logs WHERE timestamp >= %s GROUP BY app"
COUNTS = "SELECT app, level, count(*) FROM logs WHERE timestamp >= %s AND timestamp < %s GROUP BY app, level"
STORED = "SELECT sensor_id, metric, value FROM measurements WHERE timestamp = %s AND sensor_id = ANY(%s) AND metric = ANY(%s)"

# emit(readings, durable) hands readings to the sinks and returns the batch (None when stopping);
# durable=True means they are already in `measurements` (corrections).
Emit = Callable[[list[Reading], bool], "Batch | None"]
# correct(readings) gives stored readings their new values (the PostgreSQL sink's `correct`).
Correct = Callable[[Sequence[Reading]], None]
HAND_OVER_MAX = 5000  # readings per hand-over: a long catch-up goes to the sinks in bounded batches


class LogCounter:
    """Thread body: every tick, counts the due windows and hands new or corrected counts to the sinks."""

    def __init__(self, pg: PostgresConfig, password: Secret, cfg: LogsConfig, retry: RetryConfig, metrics: Metrics,
                 emit: Emit, correct: Correct, clock: Callable[[], float] = time.time):
        self.pg, self.password, self.cfg, self.retry, self.metrics = pg, password, cfg, retry, metrics
        self.emit = emit
        self.correct = correct
        self.clock = clock
        self.windows = CountWindows(cfg.count_window_s, cfg.count_grace_s, cfg.count_active_s)
        self.tick_s = min(1.0, cfg.count_window_s / 2)
        self.stop_event = threading.Event()
        self.pool: ConnectionPool | None = None
        self._lock = threading.Lock()  # `mark` runs in the log sink's thread

    def start(self) -> None:
        """Connect and learn from the stored logs which apps are active; windows since then get counted."""
        if self.pool is None:
            self.pool = open_pool(self.pg, self.password, "log-counter")
        now = self.clock()
        since = now - self.cfg.count_active_s - 2 * self.cfg.count_window_s
        with self.pool.connection() as conn:
            seen = {app: (epoch(first), epoch(last)) for app, first, last in conn.execute(SEEN, (utc_naive(since),))}
        with self._lock:
            self.windows.begin(now, seen)
        log.info("event=log_counter_started window_s=%d active_apps=%d", self.cfg.count_window_s, len(seen))

    def mark(self, records: Sequence[LogRecord]) -> None:
        """The log sink's hook: these records are durable."""
        with self._lock:
            for r in records:
                self.windows.mark(r.app, r.ts)

    def run(self) -> None:
        while not self.stop_event.wait(self.tick_s):
            self.tick()

    def tick(self) -> None:
        now = self.clock()
        with self._lock:
            due = [(start, self.windows.active(start)) for start in self.windows.due(now)]
        new: list[Reading] = []
        corrected: list[Reading] = []
        for start, apps in due:
            if self.stop_event.is_set():
                return  # not counted: the next start counts it again (lookback)
            n, c = self._retrying(lambda: self.count(start, apps), "log_count")
            new += n
            corrected += c
        # One hand-over for every window due (a catch-up after a start or a stall is many windows), in
        # event-time order, so the alert evaluator sees each series in order.
        handed = 0
        for readings, durable in ((new, False), (corrected, True)):
            for i in range(0, len(readings), HAND_OVER_MAX):
                chunk = readings[i:i + HAND_OVER_MAX]
                if not self._hand_over(chunk, durable):
                    return
                handed += len(chunk)
        if handed:
            self.metrics.log_count_readings.inc(handed)
            log.debug("event=log_windows_counted windows=%d new=%d corrected=%d", len(due), len(new), len(corrected))

    def _retrying(self, fn, operation: str):
        return retry_call(fn, operation=operation, policy=self.retry, is_transient=is_transient,
                          stop=self.stop_event, on_retry=lambda *_: self.metrics.retries.labels(operation).inc())

    def count(self, start: float, apps: list[str]) -> tuple[list[Reading], list[Reading]]:
        """Count one window from the stored logs and correct stored counts that changed in place; returns
        the readings to hand to the sinks: (new, corrected)."""
        assert self.pool is not None
        end = start + self.cfg.count_window_s
        with self.pool.connection() as conn:
            counts = {(app, level): n for app, level, n in conn.execute(COUNTS, (utc_naive(start), utc_naive(end)))}
            rows = count_rows(counts, apps)
            if not rows:
                return [], []
            stored = {(s, m): v for s, m, v in conn.execute(
                STORED, (utc_naive(start), sorted({s for s, _ in rows}), [metric(lv) for lv in LEVELS]))}
            new, corrected = changes(rows, stored)
        now = self.clock()
        fixed = [self._reading(s, m, v, start, now) for (s, m), v in corrected.items()]
        if fixed:
            self.correct(fixed)
        return [self._reading(s, m, v, start, now) for (s, m), v in new.items()], fixed

    def _hand_over(self, readings: list[Reading], durable: bool) -> bool:
        # Wait until every sink holds them: the next count of this window must see them stored.
        batch = self.emit(readings, durable)
        if batch is None:
            return False
        while not batch.done.wait(0.2):
            if self.stop_event.is_set():
                return False
        return True

    def _reading(self, sensor_id: str, metric_name: str, value: float, start: float, now: float) -> Reading:
        # A source in the readings contract, so a dead letter made of this count says what it was.
        payload = orjson.dumps({"type": APP_SENSOR_TYPE, "timestamp": start, "readings": {metric_name: value}})
        source = RawMessage(f"sensors/{sensor_id}", payload, now, sensor_id.encode())
        return Reading(sensor_id, APP_SENSOR_TYPE, None, metric_name, value, start, now, source)

    def stop(self) -> None:
        """No more counting: a window left uncounted is counted after the next start."""
        self.stop_event.set()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
