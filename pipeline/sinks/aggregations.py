"""Window rows from durable readings; runs inside the PostgreSQL sink's thread, after its writes.

`measurements` is the source of truth. In the readings' own transaction, every window a newly stored
reading falls in is recorded in `aggregation_pending`. When a window closes, one statement per window
deletes its pending rows and upserts its `aggregations` rows (ON CONFLICT ... DO UPDATE overwrites with
values from the complete data), computed by GROUP BY over `measurements`, or for a longer period from the
rows of a shorter one that divides it (closed first: windows ending together close shortest first), the
closed windows are added to the Redis stream, and the transaction commits. A crash anywhere leaves the window pending, so it is
closed again after restart: rows are exact, stream entries at-least-once (each carries an `id`).

Redis keys (under `redis.key_prefix`):
  partial:<sensor_id>    hash: <metric>:<period> -> JSON {start, end, count, avg, min, max} of the newest window
  <aggregations stream>  XADD id, sensor_id, metric, period, start, end, avg, min, max, count per closed window
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Sequence

import orjson
import psycopg
import redis
from psycopg_pool import ConnectionPool, PoolTimeout

from ..config import AggregationConfig, RedisConfig, Secret
from ..observability.metrics import Metrics
from ..records import Reading
from ..runtime.ownership import Ownership
from ..stages.windows import US, Due, Partials, Window, WindowTracker, from_us, to_us
from .redis_stream import connect

log = logging.getLogger(__name__)

# Means in SQL: avg() over DOUBLE PRECISION raises "value out of range: overflow" once readings pass about
# 1e154 (its running sum of squares) and sum() past 1.8e308, so one huge reading would keep its window from
# ever closing (and, in the by-time statement, every other sensor's of that window). The mean of finite
# doubles is finite: computed exactly in numeric, from each double's shortest exact text (a plain ::numeric
# cast keeps only 15 digits).
MEAN_VALUE = "avg(m.value::text::numeric)::float8"

# One statement for every window a batch touched (executemany would be a statement per row).
INSERT_PENDING = ("INSERT INTO aggregation_pending (period, window_start, sensor_id, metric, window_end, kafka_partition) "
                  "SELECT * FROM unnest(%s::text[], %s::timestamp[], %s::text[], %s::text[], %s::timestamp[], %s::int[]) "
                  "ON CONFLICT DO NOTHING")
LOAD_PENDING = "SELECT period, window_start, window_end, sensor_id, metric, kafka_partition FROM aggregation_pending"
# Running values of the pending windows, so the dashboard's partials are right again after a restart.
SEED_PARTIALS = """
SELECT p.sensor_id, p.metric, p.period, p.window_start, p.window_end, count(*), """ + MEAN_VALUE + """, min(m.value),
       max(m.value)
  FROM aggregation_pending p
  JOIN measurements m ON m.sensor_id = p.sensor_id AND m.metric = p.metric
                     AND m.timestamp >= p.window_start AND m.timestamp < p.window_end
 GROUP BY p.sensor_id, p.metric, p.period, p.window_start, p.window_end"""

# Closing one window, in one statement: forget its pending rows, compute its rows from a source, upsert them
# (ON CONFLICT ... DO UPDATE overwrites with values from the complete data).
_CLOSING = """
WITH keys AS (SELECT * FROM unnest(%(sensors)s::text[], %(metrics)s::text[]) AS k (sensor_id, metric)),
closing AS (
    DELETE FROM aggregation_pending p USING keys k
     WHERE p.period = %(period)s AND p.window_start = %(start)s AND p.sensor_id = k.sensor_id AND p.metric = k.metric
    RETURNING p.sensor_id, p.metric),"""
_UPSERT = """
INSERT INTO aggregations AS a (sensor_id, metric, avg_value, min_value, max_value, count, period, timestamp)
SELECT sensor_id, metric, avg_value, min_value, max_value, count, %(period)s, %(start)s FROM src
ON CONFLICT (sensor_id, metric, period, timestamp) DO UPDATE
   SET avg_value = EXCLUDED.avg_value, min_value = EXCLUDED.min_value, max_value = EXCLUDED.max_value,
       count = EXCLUDED.count
RETURNING sensor_id, metric, avg_value, min_value, max_value, count"""
UPSERT_WINDOW_ROWS = _UPSERT  # pipeline/rebuild.py writes with exactly this statement too
# Sources. A few keys (a late correction): their readings by the (sensor_id, metric, timestamp) index.
CLOSE_FROM_READINGS_BY_KEY = _CLOSING + """
src AS (
    SELECT m.sensor_id, m.metric, """ + MEAN_VALUE + """ AS avg_value, min(m.value) AS min_value, max(m.value) AS max_value,
           count(*)::int AS count
      FROM closing c
      JOIN measurements m ON m.sensor_id = c.sensor_id AND m.metric = c.metric
                         AND m.timestamp >= %(start)s AND m.timestamp < %(end)s
     GROUP BY m.sensor_id, m.metric)""" + _UPSERT
# Many keys (a window closing for every sensor): one pass over the window's time range and a hash
# aggregate, about 5x cheaper than an index range scan per key (110 ms against 600 ms for 420,000 rows).
CLOSE_FROM_READINGS_BY_TIME = _CLOSING + """
span AS MATERIALIZED (
    SELECT sensor_id, metric, """ + MEAN_VALUE + """ AS avg_value, min(value) AS min_value, max(value) AS max_value,
           count(*)::int AS count
      FROM measurements m WHERE timestamp >= %(start)s AND timestamp < %(end)s
     GROUP BY sensor_id, metric),
src AS (SELECT s.* FROM span s JOIN closing c ON c.sensor_id = s.sensor_id AND c.metric = s.metric)""" + _UPSERT
# A longer period from the closed rows of a shorter one that divides it (5m from 1m, 1h from 5m): exact
# for count, min and max, the average to within floating-point rounding; an hour is 12 rows, not 36 million.
CLOSE_FROM_ROLLUP = _CLOSING + """
src AS (
    SELECT a.sensor_id, a.metric, (sum(a.avg_value::text::numeric * a.count) / sum(a.count))::float8 AS avg_value, min(a.min_value) AS min_value,
           max(a.max_value) AS max_value, sum(a.count)::int AS count
      FROM closing c
      JOIN aggregations a ON a.sensor_id = c.sensor_id AND a.metric = c.metric AND a.period = %(sub_period)s
                         AND a.timestamp >= %(start)s AND a.timestamp < %(end)s
     GROUP BY a.sensor_id, a.metric)""" + _UPSERT
BY_TIME_FROM_KEYS = 50  # closing this many keys of a window or more: aggregate its time range in one pass


def rollup_sources(sizes: dict[str, int]) -> dict[str, str]:
    """period -> the longest shorter configured period that divides it (its rows are what it is rolled up from)."""
    out = {}
    for period, size in sizes.items():
        divisors = [(s, p) for p, s in sizes.items() if s < size and size % s == 0]
        if divisors:
            out[period] = max(divisors)[1]
    return out


PARTIALS_EVERY_S = 1.0
TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, redis.ConnectionError, redis.TimeoutError,
             redis.BusyLoadingError)


class WindowAggregator:
    """Marks windows pending with the readings, closes them by watermark or idle timeout, publishes partials."""

    def __init__(self, cfg: AggregationConfig, redis_cfg: RedisConfig, redis_password: Secret, metrics: Metrics,
                 clock=time.time):
        self.cfg = cfg
        self.redis_cfg = redis_cfg
        self.redis_password = redis_password
        self.metrics = metrics
        self.clock = clock
        self.tracker = WindowTracker(cfg.periods, cfg.grace_s, cfg.idle_close_s)
        self.partials = Partials(self.tracker)
        self.rollup_from = rollup_sources(self.tracker.sizes)
        # Windows found pending in the database (at start or on a partition's assignment) are closed from
        # the readings: what was stored before we owned them may predate a shorter period's rows.
        self.from_readings: set[Window] = set()
        self.pool: ConnectionPool | None = None
        self.redis: redis.Redis | None = None
        prefix = redis_cfg.key_prefix
        self.stream = prefix + redis_cfg.streams.aggregations
        self.partial_prefix = prefix + "partial:"
        # Partials go to Redis at most every PARTIALS_EVERY_S, for every sensor touched since: the dashboard
        # polls every second or two, and publishing per batch cost more than storing the readings.
        self._touched: dict[str, set[str]] = {}
        self._next_partials = 0.0
        # Rebalance callbacks run in the consumer thread, closing in the PostgreSQL sink's: one at a time.
        self.lock = threading.RLock()
        self.ownership = Ownership()

    def start(self, pool: ConnectionPool) -> None:
        """Reload the pending windows (the state a crash must not lose) and their running values."""
        self.pool = pool
        if self.redis is None:  # start() may be retried while the services come up
            self.redis = connect(self.redis_cfg, self.redis_password)
        self.tracker.pending.clear()
        with pool.connection() as conn:
            loaded = self._load(conn, None)
        log.info("event=aggregation_started periods=%s grace_s=%g pending_windows=%d", ",".join(self.tracker.sizes),
                 self.cfg.grace_s, loaded)

    def _load(self, conn: psycopg.Connection, partitions: set[int] | None) -> int:
        """Pending windows (all, or of these partitions) and their running values, from the database."""
        now = self.clock()
        where, params = ("", ()) if partitions is None else (" WHERE kafka_partition = ANY(%s)", (sorted(partitions),))
        pending = conn.execute(LOAD_PENDING + where, params).fetchall()
        # Every pending window is closed, even of a period no longer configured: its readings were promised a row.
        for period, start, end, sensor_id, metric, partition in pending:
            window = Window(period, to_us(start), to_us(end))
            self.tracker.load(partition, window, sensor_id, metric, now)
            self.from_readings.add(window)
        seeds = conn.execute(SEED_PARTIALS.replace("GROUP BY", where.replace("kafka_partition", "p.kafka_partition")
                                                   + " GROUP BY"), params).fetchall() if pending else []
        for sensor_id, metric, period, start, end, count, mean, lo, hi in seeds:
            if period in self.tracker.sizes:
                self.partials.seed(sensor_id, metric, Window(period, to_us(start), to_us(end)), count, mean * count, lo, hi)
        self.metrics.windows_pending.set(self.tracker.pending_count())
        return len(pending)

    # -- partition ownership (scale-out) -------------------------------------------------------
    def _drop(self, keep=None, drop: set[int] | None = None) -> None:
        """Forget watermarks and pending windows of partitions we no longer own (they stay pending in the
        database: the new owner loads and closes them)."""
        t = self.tracker
        gone = (lambda p: p not in keep) if keep is not None else (lambda p: p in drop)
        for key in [k for k in t.pending if k[0] >= 0 and gone(k[0])]:
            del t.pending[key]
        for d in (t.max_event, t.last_activity):
            for p in [p for p in d if p >= 0 and gone(p)]:
                del d[p]

    def partitions_assigned(self, partitions: set[int]) -> None:
        """Rebuild the windows of newly owned partitions from aggregation_pending."""
        with self.lock:
            to_drop, to_load = self.ownership.assign(partitions)
            if to_drop is None:
                self._drop(keep=partitions)
            elif to_drop:
                self._drop(drop=to_drop)
            if to_load and self.pool is not None:
                with self.pool.connection() as conn:
                    n = self._load(conn, to_load)
                log.info("event=aggregation_partitions_loaded partitions=%s pending_windows=%d",
                         ",".join(map(str, sorted(to_load))), n)

    def partitions_revoked(self, partitions: set[int]) -> None:
        """Hand off: the next owner closes these partitions' windows."""
        with self.lock:
            self._drop(drop=self.ownership.revoke(partitions))
            self.metrics.windows_pending.set(self.tracker.pending_count())

    # -- inside the readings' transaction ------------------------------------------------------
    def stage(self, cur: psycopg.Cursor, records: Sequence[Reading], inserted: Sequence[tuple]) -> list[tuple]:
        """Record the windows of newly stored readings as pending; returns them for `committed`."""
        partition_of = {r.sensor_id: (r.source.partition if r.source is not None else -1) for r in records}
        tracker = self.tracker
        new: dict[tuple, tuple] = {}
        for sensor_id, metric, _value, ts_us in inserted:
            partition = partition_of.get(sensor_id, -1)
            for w in tracker.windows(ts_us):
                if tracker.is_pending(partition, w, sensor_id, metric):
                    continue
                key = (partition, w, sensor_id, metric)
                if key not in new:
                    new[key] = (w.period, from_us(w.start), sensor_id, metric, from_us(w.end), partition)
        if new:
            cur.execute(INSERT_PENDING, [list(column) for column in zip(*new.values())])
        return list(new)

    # -- after the commit ----------------------------------------------------------------------
    def committed(self, records: Sequence[Reading], inserted: Sequence[tuple], staged: Sequence[tuple]) -> None:
        """The readings are durable: move watermarks, note pending windows, publish partials, close what is due.
        Never raises: whatever fails stays pending in the database and is retried on the next batch or tick."""
        with self.lock:
            self._committed(records, inserted, staged)

    def _committed(self, records: Sequence[Reading], inserted: Sequence[tuple], staged: Sequence[tuple]) -> None:
        now = self.clock()
        tracker = self.tracker
        owns = self.ownership.owns
        # A batch that finished while its partition was being revoked: the next owner has its windows now.
        staged = [s for s in staged if s[0] < 0 or owns(s[0])]
        records = [r for r in records if r.source is None or owns(r.source.partition)]
        for partition, w, sensor_id, metric in staged:
            if tracker.is_closed(partition, w):
                self.metrics.window_corrections.labels(w.period).inc()
            tracker.add(partition, w, sensor_id, metric)
        newest: dict[int, float] = {}  # the watermark moves once per partition and batch
        for r in records:
            partition = r.source.partition if r.source is not None else -1
            if r.ts > newest.get(partition, -1.0):
                newest[partition] = r.ts
        for partition, ts in newest.items():
            tracker.observe(partition, round(ts * US), now)
        touched = self._touched
        add = self.partials.add
        for sensor_id, metric, value, ts_us in inserted:
            add(sensor_id, metric, ts_us, value)
            metrics = touched.get(sensor_id)
            if metrics is None:
                touched[sensor_id] = {metric}
            else:
                metrics.add(metric)
        self.flush_partials(now)
        self.close_due()

    def flush_partials(self, now: float) -> None:
        """Publish the running values touched since the last time, if PARTIALS_EVERY_S has passed."""
        if self._touched and now >= self._next_partials:
            touched, self._touched = self._touched, {}
            self._next_partials = now + PARTIALS_EVERY_S
            self._guard("publish_partials", lambda: self._publish_partials(touched))

    def close_due(self) -> None:
        """Write the rows of every window that is due; called after each write and on the sink's tick."""
        with self.lock:
            self.flush_partials(self.clock())
            self._close_due()

    def _close_due(self) -> None:
        # Only windows of partitions we own: two instances closing one window would race on its pending rows.
        due = [d for d in self.tracker.due(self.clock()) if d.partition < 0 or self.ownership.owns(d.partition)]
        if due:
            self._guard("close_windows", lambda: self._close(due))
        self.metrics.windows_pending.set(self.tracker.pending_count())
        for partition in self.tracker.max_event:
            wm = self.tracker.watermark(partition)
            if wm is not None:
                self.metrics.watermark.labels(str(partition)).set(wm / US)

    def _guard(self, what: str, fn) -> None:
        try:
            fn()
        except TRANSIENT as err:
            self.metrics.aggregation_errors.inc()
            log.warning("event=aggregation_retry_later step=%s error=%r", what, str(err)[:200])
        except Exception:  # noqa: BLE001 - the windows stay pending; a bug here must not stop the readings
            self.metrics.aggregation_errors.inc()
            log.exception("event=aggregation_failed step=%s", what)

    def _publish_partials(self, touched: dict[str, set[str]]) -> None:
        assert self.redis is not None
        pipe = self.redis.pipeline(transaction=False)
        for sensor_id, metrics in touched.items():
            fields = self.partials.fields(sensor_id, metrics)
            pipe.hset(self.partial_prefix + sensor_id, mapping={k: orjson.dumps(v) for k, v in fields.items()})
        pipe.execute()

    def _close(self, due: list[Due]) -> None:
        assert self.pool is not None and self.redis is not None
        groups: dict[Window, set[tuple[str, str]]] = {}
        for d in due:  # in closing order: a shorter window before the longer one ending with it (rollups)
            groups.setdefault(d.window, set()).update(d.keys)
        entries: list[tuple[Window, tuple]] = []
        with self.pool.connection() as conn:
            with conn.transaction():
                with conn.cursor() as cur:
                    for window, keys in groups.items():
                        sql, params = self.close_statement(window, sorted(keys))
                        cur.execute(sql, params)
                        entries.extend((window, row) for row in cur.fetchall())
                # Published before the commit: a crash in between leaves the windows pending, so they are
                # published again after restart (at-least-once) instead of never.
                self._publish_closed(entries)
        for d in due:
            self.tracker.remove(d)
        self.from_readings.difference_update(groups)
        for window, _row in entries:
            self.metrics.windows_closed.labels(window.period).inc()
        if entries:
            log.debug("event=windows_closed windows=%d rows=%d", len(groups), len(entries))

    def close_statement(self, window: Window, pairs: list[tuple[str, str]]) -> tuple[str, dict]:
        """The statement that closes these (sensor_id, metric) keys of a window, and its parameters."""
        params = {"period": window.period, "start": from_us(window.start), "end": from_us(window.end),
                  "sensors": [p[0] for p in pairs], "metrics": [p[1] for p in pairs]}
        sub = self.rollup_from.get(window.period)
        if sub is not None and window not in self.from_readings:
            params["sub_period"] = sub
            return CLOSE_FROM_ROLLUP, params
        return (CLOSE_FROM_READINGS_BY_TIME if len(pairs) >= BY_TIME_FROM_KEYS else CLOSE_FROM_READINGS_BY_KEY), params

    def _publish_closed(self, entries: list[tuple[Window, tuple]]) -> None:
        if not entries:
            return
        assert self.redis is not None
        pipe = self.redis.pipeline(transaction=False)
        maxlen = self.redis_cfg.stream_maxlen
        for window, (sensor_id, metric, avg, lo, hi, count) in entries:
            start = window.start // US
            pipe.xadd(self.stream, {"id": f"{sensor_id}|{metric}|{window.period}|{start}", "sensor_id": sensor_id,
                                    "metric": metric, "period": window.period, "start": start, "end": window.end // US,
                                    "avg": repr(avg), "min": repr(lo), "max": repr(hi), "count": count},
                      maxlen=maxlen, approximate=True)
        pipe.execute()

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()


def as_rows(records: Sequence[Reading]) -> list[tuple[str, str, float, int]]:
    """Readings as the (sensor_id, metric, value, event time in µs) rows a plain COPY stored (no RETURNING there)."""
    return [(r.sensor_id, r.metric, r.value, round(r.ts * US)) for r in records]
