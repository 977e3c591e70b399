"""Redis sink: one stream entry per reading (pipelined, capped) and the latest value per sensor and metric.

Keys (all under `redis.key_prefix`):
  <readings stream>      XADD fields id, sensor_id, metric, value, ts, received_at. `id` is the reading's
                         identity (sensor|metric|event time in µs): consumers drop duplicates by it.
  latest:<sensor_id>     hash: <metric> -> value, <metric>:ts -> event time, type, location; expires
                         between limits.state_idle_s and 1.1 times that after the sensor's last reading (its TTL
                         is set again at most every tenth of it, not on every write: runtime/idle.py, TtlRefresh)
  sensors                sorted set: sensor id -> when it was last written (epoch seconds); ids older than
                         limits.state_idle_s are trimmed on every write, so it holds the active sensors only
                         (a plain set left by an older version is converted at start)

`redis.fast_path` (default true) writes these as hand-built RESP with replies read in bulk (redis_wire.py, the
one module that relies on redis-py's internals); false writes them through redis-py's plain pipeline.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Iterable, Iterator, Sequence

import redis

from ..config import RedisConfig, Secret
from ..records import Reading
from ..runtime.batch import Batch
from ..runtime.idle import TtlRefresh
from ..clients.redis import connect
from .base import BatchingSink
from . import redis_wire

log = logging.getLogger(__name__)
ADDED_REMEMBERED = 100_000  # reading ids of entries added by failed writes (about 100 bytes each)
XADD_PIECE = 2000  # stream entries encoded at a time (about 300 KB of RESP) when a batch is sent in pieces


def latest_per_sensor(records: Sequence[Reading]) -> dict[str, list[Reading]]:
    """sensor -> the reading with the latest event time of each of its metrics in the batch (a late reading
    does not overwrite a newer one of the same batch), sensors and metrics in the order first seen."""
    by_sensor: dict[str, dict[str, Reading]] = {}
    sid = newest = None
    for r in records:
        if r.sensor_id is not sid:  # a message's readings share their sensor id: looked up once for them
            sid = r.sensor_id
            newest = by_sensor.get(sid)
            if newest is None:
                newest = by_sensor[sid] = {}
        prev = newest.get(r.metric)
        if prev is None or r.ts >= prev.ts:
            newest[r.metric] = r
    return {sensor_id: list(newest.values()) for sensor_id, newest in by_sensor.items()}


class RedisSink(BatchingSink):
    """Pipelined XADD + HSET in one MULTI/EXEC: a write refused and retried (out of memory, read-only) adds no
    entry twice; a write whose reply was lost is at-least-once, duplicates recognisable by `id`."""

    name = "redis"

    def __init__(self, cfg: RedisConfig, password: Secret, *args, state_idle_s: float = 86400.0, clock=time.time,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.cfg = cfg
        self.ttl_s = max(1, round(state_idle_s))  # latest:<sensor> and the sensors index forget a silent sensor
        self.clock = clock
        self.ttl_refresh = TtlRefresh(state_idle_s)
        self.latest_ttl = str(self.ttl_refresh.ttl).encode()
        self.password = password
        self.client: redis.Redis | None = None
        prefix = cfg.key_prefix
        self.stream = prefix + cfg.streams.readings
        self.latest_prefix = prefix + "latest:"
        self.sensors_key = prefix + "sensors"
        self._xadd_head = redis_wire.xadd_head(self.stream, cfg.stream_maxlen)
        # Readings whose stream entry a failed write added anyway (another command of its MULTI/EXEC failed, as
        # when the batch is split to isolate a refused record): not added again when written again. Empty
        # unless writes fail that way; the oldest are forgotten past ADDED_REMEMBERED.
        self._added: OrderedDict = OrderedDict()

    def start(self) -> None:
        self.client = connect(self.cfg, self.password)
        self.client.ping()  # fail (and be retried) at start rather than on the first write
        self._convert_sensor_set()
        log.info("event=sink_started sink=redis target=%s:%d stream=%s", self.cfg.host, self.cfg.port, self.stream)

    def _convert_sensor_set(self) -> None:
        """`sensors` was a plain set before it held last-write times: make it a sorted set, every id as seen now."""
        assert self.client is not None
        kind = self.client.type(self.sensors_key)
        if kind in (b"set", "set"):
            ids = self.client.smembers(self.sensors_key)
            now = int(self.clock())
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self.sensors_key)
            if ids:
                pipe.zadd(self.sensors_key, dict.fromkeys(ids, now))
            pipe.execute()
            log.info("event=redis_sensor_index_converted sensors=%d", len(ids))

    def select(self, batch: Batch) -> Sequence[Reading]:
        return batch.readings

    def write(self, records: Sequence[Reading]) -> None:
        latest = latest_per_sensor(records)
        added = self._added
        entries = [r for r in records if r.reading_id not in added] if added else records
        clock = self.clock()
        expiring = self.ttl_refresh.due(latest, clock)
        if self.cfg.fast_path:
            replies = self._write_raw(entries, latest, expiring, clock)
        else:
            replies = self._write_plain(entries, latest, expiring, clock)
        failed = next((x for x in replies if isinstance(x, Exception)), None)
        if failed is not None:
            for r, reply in zip(entries, replies):  # the first replies are the XADDs'
                if not isinstance(reply, Exception):
                    added[r.reading_id] = True
            while len(added) > ADDED_REMEMBERED:
                added.popitem(last=False)
            raise failed
        self.ttl_refresh.done(expiring, clock)

    def _write_raw(self, records: Sequence[Reading], latest: dict[str, list[Reading]], expiring: list,
                   clock: float) -> list:
        return self._send(self._commands(records, latest, expiring, clock),
                          len(records) + len(latest) + len(expiring) + 2)

    def _commands(self, records: Sequence[Reading], latest: dict[str, list[Reading]], expiring: list,
                  clock: float) -> Iterator[bytes]:
        """The transaction's commands in pieces, encoded as they are sent (redis_wire.coalesced joins small ones):
        a flood's batch of 100,000 readings was 15 MB of RESP, held three times over at once (as text, as bytes,
        framed by MULTI/EXEC) at the RSS peak (bench/RESULTS.md)."""
        head = self._xadd_head
        for i in range(0, len(records), XADD_PIECE):
            yield redis_wire.xadd_entries(head, records[i:i + XADD_PIECE])
        prefix, ttl = self.latest_prefix, self.latest_ttl
        for sensor_id, newest in latest.items():
            yield redis_wire.hset_latest(prefix + sensor_id, newest[0], [redis_wire.latest_fields(r) for r in newest])
        for sensor_id in expiring:
            yield redis_wire.pack(b"EXPIRE", (prefix + sensor_id).encode(), ttl)
        now = int(clock)
        score, key = str(now).encode(), self.sensors_key.encode()
        yield redis_wire.pack(b"ZADD", key, *(x for k in latest for x in (score, k.encode())))
        yield redis_wire.pack(b"ZREMRANGEBYSCORE", key, b"-inf", b"(%d" % (now - self.ttl_s))

    def _send(self, payload: Iterable[bytes], commands: int) -> list:
        assert self.client is not None
        return redis_wire.send_transaction(self.client, payload, commands)

    def _write_plain(self, records: Sequence[Reading], latest: dict[str, list[Reading]], expiring: list,
                     clock: float) -> list:
        """The same commands through redis-py's public pipeline (`redis.fast_path: false`)."""
        assert self.client is not None
        pipe = self.client.pipeline(transaction=True)
        stream, maxlen = self.stream, self.cfg.stream_maxlen
        for r in records:
            pipe.xadd(stream, {"id": r.reading_id, "sensor_id": r.sensor_id, "metric": r.metric,
                               "value": repr(r.value), "ts": repr(r.ts), "received_at": repr(r.received_at)},
                      maxlen=maxlen, approximate=True)
        for sensor_id, newest in latest.items():
            mapping = {"type": newest[0].sensor_type, "location": newest[0].location or ""}
            for r in newest:
                mapping[r.metric] = repr(r.value)
                mapping[r.metric + ":ts"] = repr(r.ts)
            pipe.hset(self.latest_prefix + sensor_id, mapping=mapping)
        for sensor_id in expiring:
            pipe.expire(self.latest_prefix + sensor_id, self.ttl_refresh.ttl)
        now = int(clock)
        pipe.zadd(self.sensors_key, dict.fromkeys(latest, now))
        pipe.zremrangebyscore(self.sensors_key, "-inf", f"({now - self.ttl_s}")
        return pipe.execute(raise_on_error=False)  # a command refused when queued (OOM, READONLY) still raises

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
