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


def _bulk(arg: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


# The six field/value pairs of a stream entry, formatted in one operation per reading.
_XADD_FIELDS = (b"%s$2\r\nid\r\n$%d\r\n%s\r\n$9\r\nsensor_id\r\n$%d\r\n%s\r\n$6\r\nmetric\r\n$%d\r\n%s\r\n"
                b"$5\r\nvalue\r\n$%d\r\n%s\r\n$2\r\nts\r\n$%d\r\n%s\r\n$11\r\nreceived_at\r\n$%d\r\n%s\r\n")


def _fields(*args: bytes) -> bytes:
    return b"".join([b"$%d\r\n%s\r\n" % (len(a), a) for a in args])


def pack(*args: bytes) -> bytes:
    """One Redis command in the RESP wire format."""
    return b"*%d\r\n" % len(args) + _fields(*args)


def connect(cfg: RedisConfig, password: Secret) -> redis.Redis:
    """A client from config; the password only from the environment."""
    tls = {}
    if cfg.tls.enabled:  # verification on unless redis.tls.insecure
        tls = dict(ssl=True, ssl_ca_certs=cfg.tls.ca_file or None, ssl_certfile=cfg.tls.cert_file or None,
                   ssl_keyfile=cfg.tls.key_file or None, ssl_cert_reqs="none" if cfg.tls.insecure else "required",
                   ssl_check_hostname=not cfg.tls.insecure)
    return redis.Redis(host=cfg.host, port=cfg.port, db=cfg.db, username=cfg.username or None,
                       password=password.reveal() or None, socket_timeout=cfg.socket_timeout_s,
                       socket_connect_timeout=cfg.socket_timeout_s, health_check_interval=30, **tls)


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
        self._xadd_head = b"*18\r\n" + b"".join(_bulk(a) for a in (
            b"XADD", self.stream.encode(), b"MAXLEN", b"~", str(cfg.stream_maxlen).encode(), b"*"))

    def start(self) -> None:
        self.client = connect(self.cfg, self.password)
        self.client.ping()  # fail (and be retried) at start rather than on the first write
        log.info("event=sink_started sink=redis target=%s:%d stream=%s", self.cfg.host, self.cfg.port, self.stream)

    def select(self, batch: Batch) -> Sequence[Reading]:
        return batch.readings

    def is_transient(self, err: BaseException) -> bool:
        return isinstance(err, (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError))

    def write(self, records: Sequence[Reading]) -> None:
        latest: dict[str, dict[str, object]] = {}
        commands = []
        head = self._xadd_head
        for r in records:
            rid, sid, metric = r.reading_id.encode(), r.sensor_id.encode(), r.metric.encode()
            value, ts, recv = repr(r.value).encode(), repr(r.ts).encode(), repr(r.received_at).encode()
            commands.append(_XADD_FIELDS % (head, len(rid), rid, len(sid), sid, len(metric), metric, len(value), value,
                                            len(ts), ts, len(recv), recv))
            fields = latest.get(r.sensor_id)
            if fields is None:
                fields = latest[r.sensor_id] = {"type": r.sensor_type, "location": r.location or ""}
            prev_ts = fields.get(f"{r.metric}:ts")
            if prev_ts is None or r.ts >= prev_ts:  # type: ignore[operator]
                fields[r.metric] = r.value
                fields[f"{r.metric}:ts"] = r.ts
        for sensor_id, fields in latest.items():
            args = [b"HSET", (self.latest_prefix + sensor_id).encode()]
            for k, v in fields.items():
                args += [k.encode(), (repr(v) if isinstance(v, float) else str(v)).encode()]
            commands.append(pack(*args))
        commands.append(pack(b"SADD", self.sensors_key.encode(), *(k.encode() for k in latest)))
        self._send(commands)

    def _send(self, commands: list[bytes]) -> None:
        """One write of every command, then every reply: what a pipeline does, minus redis-py's per-argument
        encoding, which cost more CPU than everything else in this sink."""
        assert self.client is not None
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([b"".join(commands)])
            error = None
            for _ in commands:
                try:
                    conn.read_response()
                except redis.ResponseError as err:  # a refused command: read the other replies, then report it
                    error = error or err
            if error is not None:
                raise error
        except BaseException:
            conn.disconnect()  # unread replies would be taken for the next command's
            raise
        finally:
            pool.release(conn)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
