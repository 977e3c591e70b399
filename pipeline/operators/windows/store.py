"""The window store: pending windows and window rows in PostgreSQL, running and closed windows in Redis.

Only writes (and reads back the pending windows after a restart). `measurements` is the source of truth.
In the readings' own transaction, every window a newly stored reading falls in is recorded in
`aggregation_pending`. Closing a window is one statement: delete its pending rows and upsert its
`aggregations` rows (ON CONFLICT ... DO UPDATE overwrites with values from the complete data), computed by
GROUP BY over `measurements`, or for a longer period from the rows of a shorter one that divides it; the
closed windows are added to the Redis stream before the commit. A crash anywhere leaves the window pending,
so it is closed again after restart: rows are exact, stream entries at-least-once (each carries an `id`).

Redis keys (under `redis.key_prefix`):
  partial:<sensor_id>    hash: <metric>:<period> -> JSON {start, end, count, avg, min, max} of the newest window;
                         expires between limits.state_idle_s and 1.1 times that after the sensor's last
                         running value (runtime/idle.py, TtlRefresh)
  <aggregations stream>  XADD id, sensor_id, metric, period, start, end, avg, min, max, count per closed window
"""
from __future__ import annotations

from typing import Iterable, Sequence

import hiredis
import psycopg
import redis
from psycopg_pool import ConnectionPool

from ...config import RedisConfig, Secret
from .tracker import US, Window, from_us, parse_period
from ...clients.redis import connect
from ...runtime.idle import TtlRefresh

# Means in SQL: avg() over DOUBLE PRECISION raises "value out of range: overflow" once readings pass about
# 1e154 (its running sum of squares) and sum() past 1.8e308, so one huge reading would keep its window from
# ever closing (and, in the by-time statement, every other sensor's of that window). The mean of finite
# doubles is finite: computed exactly in numeric, from each double's shortest exact text (a plain ::numeric
# cast keeps only 15 digits).
MEAN_VALUE = "avg(m.value::text::numeric)::float8"

# One statement for every window a batch touched (executemany would be a statement per row). A batch's rows
# are few distinct windows times its series: each is sent once and the rows as pairs of indexes, since sending
# and parsing six arrays of a row each (two of timestamps) cost as much as the insert itself (a batch of 1,000
# new sensors: 3,000 rows, bench/RESULTS.md "New sensors at the steady rate").
INSERT_PENDING = """
INSERT INTO aggregation_pending (period, window_start, sensor_id, metric, window_end, kafka_partition)
SELECT w.period, w.window_start, s.sensor_id, s.metric, w.window_end, s.kafka_partition
  FROM unnest(%s::int[], %s::int[]) AS r(window_no, series_no)
  JOIN unnest(%s::text[], %s::timestamp[], %s::timestamp[]) WITH ORDINALITY
       AS w(period, window_start, window_end, no) ON w.no = r.window_no
  JOIN unnest(%s::text[], %s::text[], %s::int[]) WITH ORDINALITY
       AS s(sensor_id, metric, kafka_partition, no) ON s.no = r.series_no
ON CONFLICT DO NOTHING"""
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
UPSERT_WINDOW_ROWS = _UPSERT  # pipeline/operators/windows/rebuild.py writes with exactly this statement too
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
PARTIALS_CHUNK = 2000  # running-value fields per Redis round trip
CLOSED_CHUNK = 2000  # closed windows' stream entries per MULTI/EXEC
BY_TIME_FROM_KEYS = 50  # closing this many keys of a window or more: aggregate its time range in one pass
# Closing that many keys, the statement runs with nested loops off. Right after a bulk load (50,000 new
# sensors) `aggregation_pending` and `aggregations` have no statistics yet (autovacuum has not analyzed them,
# or is off), so the planner takes `closing` and a window's rows for 1 row each and joins them in a nested
# loop: rolling up 12,500 keys rescanned a 5m window's 50,000 1m rows (aggregations_period_timestamp) per
# key, minutes in which the PostgreSQL sink wrote nothing. Many keys join best by hash with any statistics;
# SET LOCAL keeps the setting to this transaction, and it is put back for the next (few-key) statement.
NESTED_LOOPS_OFF = "SET LOCAL enable_nestloop = off"
NESTED_LOOPS_BACK = "SET LOCAL enable_nestloop TO DEFAULT"


# A slice of a window's keys (the rest close in later transactions, aggregator.CLOSE_SLICE): each key's rows by
# its index, in a LATERAL subquery per key, so the statement costs what the slice holds whatever the planner
# estimates (a hash join, or the by-time pass, would read the whole window's rows once per slice). A rollup
# names each shorter row whole (every column of aggregations_window_identity): with a range on the time, on
# tables not analyzed yet, the planner took aggregations_period_timestamp, the whole window's rows per key.
SLICE = "/* slice */"
CLOSE_SLICE_FROM_READINGS = SLICE + _CLOSING + """
src AS (
    SELECT c.sensor_id, c.metric, s.avg_value, s.min_value, s.max_value, s.count
      FROM closing c
     CROSS JOIN LATERAL (
           SELECT """ + MEAN_VALUE + """ AS avg_value, min(m.value) AS min_value, max(m.value) AS max_value,
                  count(*)::int AS count
             FROM measurements m
            WHERE m.sensor_id = c.sensor_id AND m.metric = c.metric
              AND m.timestamp >= %(start)s AND m.timestamp < %(end)s) s
     WHERE s.count > 0)""" + _UPSERT
CLOSE_SLICE_FROM_ROLLUP = SLICE + _CLOSING + """
src AS (
    SELECT c.sensor_id, c.metric, s.avg_value, s.min_value, s.max_value, s.count
      FROM closing c
     CROSS JOIN LATERAL (
           SELECT (sum(a.avg_value::text::numeric * a.count) / sum(a.count))::float8 AS avg_value,
                  min(a.min_value) AS min_value, max(a.max_value) AS max_value, sum(a.count)::int AS count
             FROM aggregations a
            WHERE a.sensor_id = c.sensor_id AND a.metric = c.metric AND a.period = %(sub_period)s
              AND a.timestamp = ANY(%(sub_starts)s::timestamp[])) s
     WHERE s.count > 0)""" + _UPSERT


def run_closing(cur: psycopg.Cursor, sql: str, params: dict, settings: psycopg.Cursor | None = None) -> list[tuple]:
    """Run one closing statement (close_statement's) in the caller's transaction; returns its rows, or with
    `settings` (another cursor of the connection, for the planner setting) leaves them in `cur` to be fetched."""
    many = len(params["sensors"]) >= BY_TIME_FROM_KEYS and SLICE not in sql
    setter = settings or cur
    if many:
        setter.execute(NESTED_LOOPS_OFF)
    cur.execute(sql, params)
    rows = cur.fetchall() if settings is None else []
    if many:  # not in a finally: after an error the transaction is rolled back, and the setting with it
        setter.execute(NESTED_LOOPS_BACK)
    return rows


class WindowStore:
    """PostgreSQL and Redis for the window aggregator; every method is one round trip's worth of work."""

    def __init__(self, redis_cfg: RedisConfig, redis_password: Secret, state_idle_s: float = 86400.0):
        self.redis_cfg, self.redis_password = redis_cfg, redis_password
        self.ttl_refresh = TtlRefresh(state_idle_s)  # partial:<sensor> expires with its series (limits.state_idle_s)
        self.pool: ConnectionPool | None = None
        self.redis: redis.Redis | None = None
        prefix = redis_cfg.key_prefix
        self.stream = prefix + redis_cfg.streams.aggregations
        self.partial_prefix = prefix + "partial:"

    def start(self, pool: ConnectionPool) -> None:
        self.pool = pool
        if self.redis is None:  # start() may be retried while the services come up
            self.redis = connect(self.redis_cfg, self.redis_password)

    def load_pending(self, partitions: set[int] | None) -> tuple[list[tuple], list[tuple]]:
        """Pending windows (all, or of these partitions) and the running values of their readings."""
        assert self.pool is not None
        where, params = ("", ()) if partitions is None else (" WHERE kafka_partition = ANY(%s)", (sorted(partitions),))
        with self.pool.connection() as conn:
            pending = conn.execute(LOAD_PENDING + where, params).fetchall()
            seeds = conn.execute(SEED_PARTIALS.replace("GROUP BY", where.replace("kafka_partition", "p.kafka_partition")
                                                       + " GROUP BY"), params).fetchall() if pending else []
        return pending, seeds

    @staticmethod
    def mark_pending(cur: psycopg.Cursor, keys: Iterable[tuple[int, Window, str, str]]) -> None:
        """In the readings' transaction: the (partition, window, sensor_id, metric) pending now, one statement."""
        windows: dict[Window, int] = {}
        series: dict[tuple, int] = {}
        window_nos, series_nos = [], []
        for partition, window, sensor_id, metric in keys:
            window_nos.append(windows.setdefault(window, len(windows) + 1))
            series_nos.append(series.setdefault((sensor_id, metric, partition), len(series) + 1))
        if not windows:
            return
        periods, starts, ends = zip(*((w.period, from_us(w.start), from_us(w.end)) for w in windows))
        cur.execute(INSERT_PENDING, [window_nos, series_nos, list(periods), list(starts), list(ends),
                                     *map(list, zip(*series))])

    def close(self, statements: Sequence[tuple[Window, str, dict]]) -> list[tuple[Window, int]]:
        """Run the closing statements in one transaction; the closed rows go to the stream before the commit
        (a crash in between leaves them pending and published again after restart: at-least-once). Returns how
        many rows each window closed. Every statement runs first, each into a cursor of its own; the rows are
        then made into Python objects and published CLOSED_CHUNK at a time: a flood's 150,000 closed rows, held
        all at once, took pymalloc 30 arenas higher, and what outlived them kept those (bench/RESULTS.md)."""
        assert self.pool is not None
        closed: list[tuple[Window, int]] = []
        with self.pool.connection() as conn:
            with conn.transaction():
                results = []
                with conn.cursor() as settings:
                    for window, sql, params in statements:
                        cur = conn.cursor()
                        results.append((window, cur))
                        run_closing(cur, sql, params, settings)
                for window, cur in results:
                    n = 0
                    with cur:
                        while rows := cur.fetchmany(CLOSED_CHUNK):
                            self.publish_closed([(window, row) for row in rows])
                            n += len(rows)
                    closed.append((window, n))
        return closed

    def publish_partials(self, fields_by_sensor: Iterable[tuple[str, list]], now: float) -> None:
        """HSET each sensor's running values ((sensor, [field, JSON, field, JSON ...]), Partials.encoded), as
        they are produced, PARTIALS_CHUNK fields to a round trip: a flood of new series touches every one of
        them in a second, and the whole set's commands at once held hundreds of MB (pipeline/tools/bench/flood.py)."""
        assert self.redis is not None
        sensors, commands, queued = [], [], 0
        for sensor_id, fields in fields_by_sensor:
            sensors.append(sensor_id)
            if fields:
                commands.append(("HSET", self.partial_prefix + sensor_id, *fields))
                queued += len(fields) // 2
            if queued >= PARTIALS_CHUNK:
                self._send(commands)
                commands, queued = [], 0
        expiring = self.ttl_refresh.due(sensors, now)
        commands += [("EXPIRE", self.partial_prefix + sensor_id, self.ttl_refresh.ttl) for sensor_id in expiring]
        self._send(commands)
        self.ttl_refresh.done(expiring, now)

    def _send(self, commands: list[tuple]) -> None:
        """The commands in one write, then their replies. With `redis.fast_path` each is packed by hiredis in one
        call and sent as is: redis-py's pipeline encoded and type-checked every argument and parsed every reply
        with its callbacks, half of the partials' cost in a 20,000-sensor fleet (bench/RESULTS.md). Only public
        redis-py calls; a refused command raises (as a pipeline does) and the connection, its replies unread, is
        dropped."""
        if not commands:
            return
        assert self.redis is not None
        if not self.redis_cfg.fast_path:
            pipe = self.redis.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            pipe.execute()
            return
        pool = self.redis.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([b"".join([hiredis.pack_command(c) for c in commands])])  # one sendall, not one each
            for _ in commands:
                reply = conn.read_response()
                if type(reply) is list:  # an EXEC's replies: a command refused inside it is a value, not raised
                    refused = next((r for r in reply if isinstance(r, Exception)), None)
                    if refused is not None:
                        raise refused
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def publish_closed(self, entries: list[tuple[Window, tuple]]) -> None:
        """XADD the closed windows, CLOSED_CHUNK entries to a MULTI/EXEC: the windows of 50,000 series in one
        held their commands' hundreds of MB at once (pipeline/tools/bench/flood.py). Each entry carries its `id`:
        a chunk sent again after a failure is read at-least-once, as a whole batch would be. Packed by `_send`
        with `redis.fast_path`: redis-py's pipeline.xadd cost 17-28 µs of CPU an entry against 5.5-6.4, and a
        20,000-sensor fleet closes 60,000 windows at each minute's end (bench/RESULTS.md)."""
        if not entries:
            return
        assert self.redis is not None
        head = ("XADD", self.stream, "MAXLEN", "~", self.redis_cfg.stream_maxlen, "*")
        for at in range(0, len(entries), CLOSED_CHUNK):
            commands = []
            for window, (sensor_id, metric, avg, lo, hi, count) in entries[at:at + CLOSED_CHUNK]:
                start = window.start // US
                commands.append((*head, "id", f"{sensor_id}|{metric}|{window.period}|{start}", "sensor_id", sensor_id,
                                 "metric", metric, "period", window.period, "start", start, "end", window.end // US,
                                 "avg", repr(avg), "min", repr(lo), "max", repr(hi), "count", count))
            if self.redis_cfg.fast_path:
                self._send([("MULTI",), *commands, ("EXEC",)])
                continue
            pipe = self.redis.pipeline(transaction=True)
            for command in commands:
                pipe.execute_command(*command)
            pipe.execute()

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.close()


def close_statement(window: Window, pairs: list[tuple[str, str]], rollup_from: str | None,
                    whole: bool = True) -> tuple[str, dict]:
    """The statement that closes these (sensor_id, metric) keys of a window, and its parameters; from the rows of
    the shorter period `rollup_from` when given, else from the readings. `whole`: the keys are all the window has
    pending (else a slice of them, closed by key: see SLICE)."""
    params = {"period": window.period, "start": from_us(window.start), "end": from_us(window.end),
              "sensors": [p[0] for p in pairs], "metrics": [p[1] for p in pairs]}
    slice_ = not whole and len(pairs) >= BY_TIME_FROM_KEYS
    if rollup_from is not None:
        params["sub_period"] = rollup_from
        if slice_:
            step = parse_period(rollup_from) * US
            params["sub_starts"] = [from_us(t) for t in range(window.start, window.end, step)]
            return CLOSE_SLICE_FROM_ROLLUP, params
        return CLOSE_FROM_ROLLUP, params
    if slice_:
        return CLOSE_SLICE_FROM_READINGS, params
    return (CLOSE_FROM_READINGS_BY_TIME if len(pairs) >= BY_TIME_FROM_KEYS else CLOSE_FROM_READINGS_BY_KEY), params
