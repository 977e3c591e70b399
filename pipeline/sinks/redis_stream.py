"""Redis sink: one stream entry per reading (pipelined, capped) and the latest value per sensor and metric.

Keys (all under `redis.key_prefix`):
  <readings stream>      XADD fields id, sensor_id, metric, value, ts, received_at. `id` is the reading's
                         identity (sensor|metric|event time in µs): consumers drop duplicates by it.
  latest:<sensor_id>     hash: <metric> -> value, <metric>:ts -> event time, type, location
  sensors                set of sensor ids seen
"""
from __future__ import annotations

import logging
from typing import Sequence

import redis

from ..config import RedisConfig, Secret
from ..records import Reading
from ..runtime.batch import Batch
from .base import BatchingSink

log = logging.getLogger(__name__)


def connect(cfg: RedisConfig, password: Secret) -> redis.Redis:
    """A client from config; the password only from the environment."""
    return redis.Redis(host=cfg.host, port=cfg.port, db=cfg.db, username=cfg.username or None,
                       password=password.reveal() or None, socket_timeout=cfg.socket_timeout_s,
                       socket_connect_timeout=cfg.socket_timeout_s, health_check_interval=30)


class RedisSink(BatchingSink):
    """Pipelined XADD + HSET, no transaction: at-least-once, duplicates recognisable by `id`."""

    name = "redis"

    def __init__(self, cfg: RedisConfig, password: Secret, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cfg = cfg
        self.password = password
        self.client: redis.Redis | None = None
        prefix = cfg.key_prefix
        self.stream = prefix + cfg.streams.readings
        self.latest_prefix = prefix + "latest:"
        self.sensors_key = prefix + "sensors"

    def start(self) -> None:
        self.client = connect(self.cfg, self.password)
        self.client.ping()  # fail (and be retried) at start rather than on the first write
        log.info("event=sink_started sink=redis target=%s:%d stream=%s", self.cfg.host, self.cfg.port, self.stream)

    def select(self, batch: Batch) -> Sequence[Reading]:
        return batch.readings

    def is_transient(self, err: BaseException) -> bool:
        return isinstance(err, (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError))

    def write(self, records: Sequence[Reading]) -> None:
        assert self.client is not None
        pipe = self.client.pipeline(transaction=False)
        stream, maxlen = self.stream, self.cfg.stream_maxlen
        latest: dict[str, dict[str, object]] = {}
        for r in records:
            pipe.xadd(stream, {"id": r.reading_id, "sensor_id": r.sensor_id, "metric": r.metric, "value": repr(r.value),
                               "ts": repr(r.ts), "received_at": repr(r.received_at)},
                      maxlen=maxlen, approximate=True)
            fields = latest.get(r.sensor_id)
            if fields is None:
                fields = latest[r.sensor_id] = {"type": r.sensor_type, "location": r.location or ""}
            prev_ts = fields.get(f"{r.metric}:ts")
            if prev_ts is None or r.ts >= prev_ts:  # type: ignore[operator]
                fields[r.metric] = r.value
                fields[f"{r.metric}:ts"] = r.ts
        for sensor_id, fields in latest.items():
            pipe.hset(self.latest_prefix + sensor_id, mapping={k: repr(v) if isinstance(v, float) else v for k, v in fields.items()})
        pipe.sadd(self.sensors_key, *latest)
        pipe.execute()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
