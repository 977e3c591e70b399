"""What the dashboard reads and changes: alerts and trends in PostgreSQL, the latest values in Redis.

Every query is parameterised. The dashboard has its own small connection pool, so a slow page never
takes a connection the PostgreSQL sink needs. Driver errors become `Unavailable`, which the app turns
into a 503 naming the dependency.
"""
from __future__ import annotations

import logging
import math
from datetime import timedelta

import redis
from psycopg.rows import dict_row

from ..clients.errors import POSTGRES_AWAY, REDIS_AWAY
from ..clients.postgres import epoch, new_pool, utc_naive
from ..clients.redis import connect as redis_connect
from ..config import PostgresConfig, RedisConfig, RetentionConfig, Secret
from ..operators.windows.tracker import parse_period
from . import series as series_
from .alert_states import STATE_COLUMNS, STATES, alert_state

log = logging.getLogger(__name__)

PERIODS = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}
SEVERITY_ORDER = ("critical", "warning", "info")
# Most severe first; severities outside the known three sort last.
_RANK = "CASE severity WHEN 'critical' THEN 3 WHEN 'warning' THEN 2 WHEN 'info' THEN 1 ELSE 0 END"
_OPEN = "NOT COALESCE(resolved, false)"
_ORDER = {
    "open": f"{_RANK} DESC, timestamp DESC, id DESC",
    "resolved": "resolved_at DESC NULLS LAST, id DESC",
    "all": f"COALESCE(resolved, false), {_RANK} DESC, timestamp DESC, id DESC",
}
_ALERT_COLUMNS = "id, sensor_id, type, message, severity, timestamp, COALESCE(resolved, false) AS resolved, resolved_at"
# One statement: the alert row and its `resolved` event in alert_events (as an automatic resolution writes), at once.
RESOLVE = (f"WITH r AS (UPDATE alerts SET resolved = true, resolved_at = now() AT TIME ZONE 'utc' WHERE id = %s AND {_OPEN} "
           f"RETURNING {_ALERT_COLUMNS}), "
           "e AS (INSERT INTO alert_events (alert_id, event, severity, message, timestamp) "
           "SELECT id, 'resolved', severity, 'resolved by hand', resolved_at FROM r) SELECT * FROM r")
AGGREGATIONS = ("SELECT extract(epoch FROM timestamp)::float8, avg_value, min_value, max_value, count FROM aggregations "
                "WHERE sensor_id = %s AND metric = %s AND period = %s AND timestamp >= %s AND timestamp < %s "
                "ORDER BY timestamp LIMIT %s")
# avg() over DOUBLE PRECISION overflows (an error) for readings above about 1e154: the exact mean instead.
MEAN = "avg(value::text::numeric)::float8"
# The same shape computed from raw readings, bucketed by the period (date_bin: PostgreSQL 14+).
RAW_BUCKETS = ("SELECT extract(epoch FROM date_bin(%s, timestamp, TIMESTAMP '2000-01-01'))::float8 AS t, " + MEAN + ", "
               "min(value), max(value), count(*) FROM measurements "
               "WHERE sensor_id = %s AND metric = %s AND timestamp >= %s AND timestamp < %s GROUP BY 1 ORDER BY 1 LIMIT %s")
SPARK_AGG = ("SELECT sensor_id, metric, extract(epoch FROM timestamp)::float8, avg_value FROM aggregations "
             "WHERE sensor_id = ANY(%s) AND period = '1m' AND timestamp >= %s ORDER BY 1, 2, 3")
SPARK_RAW = ("SELECT sensor_id, metric, extract(epoch FROM date_bin(%s, timestamp, TIMESTAMP '2000-01-01'))::float8 AS t, "
             + MEAN + " FROM measurements WHERE sensor_id = ANY(%s) AND timestamp >= %s GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")


class Unavailable(Exception):
    """A dependency (postgres, redis) did not answer; `dependency` names it."""

    def __init__(self, dependency: str, detail: str):
        super().__init__(f"{dependency} unavailable: {detail}")
        self.dependency = dependency
        self.detail = detail


def _alert(row: dict) -> dict:
    row["timestamp"] = epoch(row["timestamp"])
    row["resolved_at"] = epoch(row["resolved_at"])
    return row


def parse_latest(fields: dict[str, str]) -> dict:
    """A `latest:<sensor>` hash (see sinks/redis_stream.py) -> type, location and {metric: {value, ts}}."""
    metrics: dict[str, dict] = {}
    for key, raw in fields.items():
        if key in ("type", "location") or key.endswith(":ts"):
            continue
        try:
            value = float(raw)
            ts = float(fields.get(f"{key}:ts", "nan"))
        except ValueError:
            continue  # a field some other writer added: not a metric
        # Data written before values were checked finite may hold 'inf' or 'nan': shown as no value.
        metrics[key] = {"value": value if math.isfinite(value) else None, "ts": ts if math.isfinite(ts) else None}
    stamps = [m["ts"] for m in metrics.values() if m["ts"] is not None]
    return {"type": fields.get("type") or None, "location": fields.get("location") or None,
            "metrics": dict(sorted(metrics.items())), "updated_at": max(stamps) if stamps else None}


class Store:
    """PostgreSQL and Redis reads (and the manual resolve) behind one small object."""

    def __init__(self, pg: PostgresConfig, pg_password: Secret, rcfg: RedisConfig, redis_password: Secret,
                 raw_fallback_max_range_s: float = 21600, periods: tuple[str, ...] = tuple(PERIODS),
                 retention: RetentionConfig | None = None):
        self.pool = new_pool(pg, pg_password, "dashboard", min_size=1, max_size=3, timeout=5.0)
        self.redis = redis_connect(rcfg, redis_password)
        # Same keys as the Redis sink writes.
        self.sensors_key = rcfg.key_prefix + "sensors"
        self.latest_prefix = rcfg.key_prefix + "latest:"
        self.raw_fallback_max_range_s = raw_fallback_max_range_s
        ret = retention or RetentionConfig(enabled=False)
        on = ret.enabled
        # The stored resolutions of /api/series: raw readings and every configured period, with their retention.
        self.resolutions = series_.resolutions({p: parse_period(p) for p in periods}, ret.measurements_days if on else 0,
                                               dict(ret.aggregations_days) if on else {})

    def open(self) -> None:
        # Not waiting: the dashboard must come up (and show PostgreSQL red) even while PostgreSQL is down.
        self.pool.open(wait=False)

    def close(self) -> None:
        self.pool.close()
        self.redis.close()

    # -- plumbing -------------------------------------------------------------------------------
    def _query(self, sql: str, params=(), row_factory=None, timeout: float = 5.0) -> list:
        try:
            with self.pool.connection(timeout=timeout) as conn:
                with conn.cursor(row_factory=row_factory) as cur:
                    cur.execute(sql, params)
                    return cur.fetchall() if cur.description else []
        except POSTGRES_AWAY as err:
            raise Unavailable("postgres", str(err).strip()[:300]) from None

    def _redis(self, fn):
        try:
            return fn(self.redis)
        except REDIS_AWAY as err:
            raise Unavailable("redis", str(err)[:300]) from None

    def ping_postgres(self, timeout: float = 2.0) -> None:
        self._query("SELECT 1", timeout=timeout)

    def ping_redis(self) -> None:
        self._redis(lambda r: r.ping())

    # -- alerts ---------------------------------------------------------------------------------
    def alerts(self, status: str = "open", severity: str | None = None, sensor_id: str | None = None,
               limit: int = 100, state: str | None = None) -> list[dict]:
        """Alerts by status (open, resolved, all) or by `state` (alert_states.STATES: open, acknowledged, snoozed,
        flapping, resolved); unresolved ones most severe and newest first."""
        where, params = [], []
        if state is not None:
            where.append(STATES[state])
            status = "resolved" if state == "resolved" else "open"
        elif status == "open":
            where.append(_OPEN)
        elif status == "resolved":
            where.append(f"NOT ({_OPEN})")
        if severity:
            where.append("severity = %s")
            params.append(severity)
        if sensor_id:
            where.append("sensor_id = %s")
            params.append(sensor_id)
        sql = f"SELECT {_ALERT_COLUMNS}, metric, {STATE_COLUMNS} FROM alerts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {_ORDER[status]} LIMIT %s"
        return [alert_state(_alert(r)) for r in self._query(sql, (*params, limit), row_factory=dict_row)]

    def open_alert_counts(self) -> dict[str, int]:
        rows = self._query(f"SELECT severity, count(*) FROM alerts WHERE {_OPEN} GROUP BY severity")
        return {sev: n for sev, n in rows}

    def resolve_alert(self, alert_id: int) -> tuple[str, dict | None]:
        """Resolve by hand: ("resolved", alert), ("not_found", None) or ("already_resolved", alert)."""
        rows = self._query(RESOLVE, (alert_id,), row_factory=dict_row)
        if rows:
            return "resolved", _alert(rows[0])
        rows = self._query(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = %s", (alert_id,), row_factory=dict_row)
        return ("already_resolved", _alert(rows[0])) if rows else ("not_found", None)

    # -- history --------------------------------------------------------------------------------
    def trend(self, sensor_id: str, metric: str, period: str, start: float, end: float, max_points: int = 5000) -> dict:
        """avg/min/max/count per period from `aggregations`, or from `measurements` over short ranges."""
        args = (utc_naive(start), utc_naive(end), max_points)
        rows = self._query(AGGREGATIONS, (sensor_id, metric, period, *args))
        source = "aggregations"
        if not rows and end - start <= self.raw_fallback_max_range_s:
            rows = self._query(RAW_BUCKETS, (timedelta(seconds=PERIODS[period]), sensor_id, metric, *args))
            source = "measurements"
        columns = list(zip(*rows)) if rows else [(), (), (), (), ()]
        return {"sensor_id": sensor_id, "metric": metric, "period": period, "from": start, "to": end,
                "source": source if rows else "none",
                **{name: list(col) for name, col in zip(("t", "avg", "min", "max", "count"), columns)}}

    def series(self, sensor_id: str, metric: str, start: float, end: float, points: int, now: float) -> dict:
        """The metric over [start, end) at the coarsest stored resolution giving at least `points` (series.py);
        at most series.MAX_POINTS points."""
        limit = series_.MAX_POINTS
        res = series_.choose(self.resolutions, start, end, points, now)
        args = (sensor_id, metric, *((res.label,) if res.label != series_.RAW else ()),
                utc_naive(start), utc_naive(end), limit + 1)
        rows = self._query(series_.RAW_SERIES if res.label == series_.RAW else series_.AGG_SERIES, args)
        return {"sensor_id": sensor_id, "metric": metric, "from": start, "to": end, "resolution": res.label,
                "step_s": res.step_s, "points_asked": points, "limit": limit, "truncated": len(rows) > limit,
                "count": min(len(rows), limit), "points": series_.shape(res.label, rows[:limit])}

    def sparklines(self, sensor_ids: list[str], minutes: int, now: float) -> dict[str, dict[str, list]]:
        """{sensor: {metric: [[t...], [avg...]]}} over the last `minutes`: 1-minute aggregations where they
        exist, else raw readings in about 30 buckets."""
        if not sensor_ids:
            return {}
        since = utc_naive(now - minutes * 60)
        out: dict[str, dict[str, list]] = {}
        for sid, metric, t, v in self._query(SPARK_AGG, (sensor_ids, since)):
            series = out.setdefault(sid, {}).setdefault(metric, [[], []])
            series[0].append(t)
            series[1].append(v)
        missing = [s for s in sensor_ids if s not in out]
        if missing:
            bucket = timedelta(seconds=max(1, minutes * 60 // 30))
            for sid, metric, t, v in self._query(SPARK_RAW, (bucket, missing, since)):
                series = out.setdefault(sid, {}).setdefault(metric, [[], []])
                series[0].append(t)
                series[1].append(v)
        return out

    # -- sensors (latest values from Redis) ------------------------------------------------------
    def sensors(self, q: str | None = None, limit: int = 200, offset: int = 0) -> dict:
        """Sensors with their latest values, sorted by id; `q` matches id, type or location (any case)."""
        ids = sorted(_s(i) for i in self._redis(self._sensor_ids))
        needle = (q or "").lower()
        if not needle:  # no filter: read only the page's hashes
            page = ids[offset:offset + limit]
            hashes = self._redis(lambda r: self._hgetall_many(r, page))
            return {"total": len(ids), "offset": offset, "limit": limit,
                    "sensors": [{"sensor_id": sid, **parse_latest(f)} for sid, f in zip(page, hashes)]}
        rows = []
        for chunk_start in range(0, len(ids), 500):
            chunk = ids[chunk_start:chunk_start + 500]
            hashes = self._redis(lambda r: self._hgetall_many(r, chunk))
            for sid, fields in zip(chunk, hashes):
                item = {"sensor_id": sid, **parse_latest(fields)}
                if not any(needle in (x or "").lower() for x in (sid, item["type"], item["location"])):
                    continue
                rows.append(item)
        return {"total": len(rows), "offset": offset, "limit": limit, "sensors": rows[offset:offset + limit]}

    def _sensor_ids(self, r: redis.Redis) -> list:
        """The active sensors: a sorted set by last write (sinks/redis_stream.py); a plain set from an older version."""
        try:
            return r.zrange(self.sensors_key, 0, -1)
        except redis.ResponseError:  # WRONGTYPE until the daemon converts it at start
            return list(r.smembers(self.sensors_key))

    def _hgetall_many(self, r: redis.Redis, ids: list[str]) -> list[dict[str, str]]:
        pipe = r.pipeline(transaction=False)
        for sid in ids:
            pipe.hgetall(self.latest_prefix + sid)
        return [{_s(k): _s(v) for k, v in h.items()} for h in pipe.execute()]

    def sensor(self, sensor_id: str) -> dict | None:
        """One sensor: latest values (Redis), registration (PostgreSQL) and its open alerts; None if unknown."""
        fields = self._redis(lambda r: self._hgetall_many(r, [sensor_id]))[0]
        rows = self._query("SELECT type, location, created_at FROM sensors WHERE sensor_id = %s", (sensor_id,))
        if not fields and not rows:
            return None
        item = {"sensor_id": sensor_id, **parse_latest(fields), "registered_at": None}
        if rows:
            stype, location, created = rows[0]
            item["type"] = item["type"] or stype
            item["location"] = item["location"] or location
            item["registered_at"] = epoch(created)
        item["open_alerts"] = self.alerts("open", sensor_id=sensor_id, limit=50)
        return item


def _s(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
