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

import hiredis
import redis

from ..config import RedisConfig, Secret
from ..records import Reading
from ..runtime.batch import Batch
from ..clients.redis import connect
from .base import BatchingSink

log = logging.getLogger(__name__)


def _bulk(arg: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


def pack(*args: bytes) -> bytes:
    """One Redis command in the RESP wire format."""
    return b"*%d\r\n" % len(args) + b"".join([_bulk(a) for a in args])


def xadd_fields(r: Reading) -> str:
    """The six field/value pairs of a reading's stream entry in RESP, as one str: every part is ASCII
    (ids and metrics are validated ASCII, numbers are repr()), so character counts are byte counts and the
    whole write is encoded once."""
    rid, sid, metric = r.reading_id, r.sensor_id, r.metric
    value, ts, recv = repr(r.value), repr(r.ts), repr(r.received_at)
    return (f"$2\r\nid\r\n${len(rid)}\r\n{rid}\r\n$9\r\nsensor_id\r\n${len(sid)}\r\n{sid}\r\n"
            f"$6\r\nmetric\r\n${len(metric)}\r\n{metric}\r\n$5\r\nvalue\r\n${len(value)}\r\n{value}\r\n"
            f"$2\r\nts\r\n${len(ts)}\r\n{ts}\r\n$11\r\nreceived_at\r\n${len(recv)}\r\n{recv}\r\n")


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
        self._xadd_head = (b"*18\r\n" + b"".join(_bulk(a) for a in (
            b"XADD", self.stream.encode(), b"MAXLEN", b"~", str(cfg.stream_maxlen).encode(), b"*"))).decode()

    def start(self) -> None:
        self.client = connect(self.cfg, self.password)
        self.client.ping()  # fail (and be retried) at start rather than on the first write
        log.info("event=sink_started sink=redis target=%s:%d stream=%s", self.cfg.host, self.cfg.port, self.stream)

    def select(self, batch: Batch) -> Sequence[Reading]:
        return batch.readings

    def write(self, records: Sequence[Reading]) -> None:
        head = self._xadd_head
        entries = [head + xadd_fields(r) for r in records]
        newest: dict[tuple[str, str], Reading] = {}  # (sensor, metric) -> the reading with the latest event time
        for r in records:
            key = (r.sensor_id, r.metric)
            prev = newest.get(key)
            if prev is None or r.ts >= prev.ts:
                newest[key] = r
        latest: dict[str, tuple[Reading, list[str]]] = {}  # sensor -> (a reading of it, its metric fields in RESP)
        for (sensor_id, metric), r in newest.items():
            fields = latest.get(sensor_id)
            if fields is None:
                fields = latest[sensor_id] = (r, [])
            value, ts = repr(r.value), repr(r.ts)
            fields[1].append(f"${len(metric)}\r\n{metric}\r\n${len(value)}\r\n{value}\r\n"
                             f"${len(metric) + 3}\r\n{metric}:ts\r\n${len(ts)}\r\n{ts}\r\n")
        commands = ["".join(entries).encode()]
        for sensor_id, (r, fields) in latest.items():
            # HSET latest:<sensor> type <t> location <l> (type and location may be any text: encoded per field)
            commands.append(b"*%d\r\n$4\r\nHSET\r\n%s$4\r\ntype\r\n%s$8\r\nlocation\r\n%s%s" % (
                6 + 4 * len(fields), _bulk((self.latest_prefix + sensor_id).encode()), _bulk(r.sensor_type.encode()),
                _bulk((r.location or "").encode()), "".join(fields).encode()))
        commands.append(pack(b"SADD", self.sensors_key.encode(), *(k.encode() for k in latest)))
        self._send(b"".join(commands), len(records) + len(latest) + 1)

    def _send(self, payload: bytes, replies: int) -> None:
        """One write of every command, then every reply: what a pipeline does, minus redis-py's per-argument
        encoding and per-reply parsing, which cost more CPU than everything else in this sink. The replies
        are parsed in bulk by hiredis from redis-py's connection socket (`_sock`, in redis-py 5 to 8);
        redis-py still connects, authenticates, checks health and reconnects."""
        assert self.client is not None
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([payload])
            reader = hiredis.Reader()
            sock = conn._sock
            error = None
            while replies:
                try:
                    data = sock.recv(65536)
                except OSError as err:
                    raise redis.ConnectionError(f"reading replies from Redis: {err}") from err
                if not data:
                    raise redis.ConnectionError("Redis closed the connection")
                reader.feed(data)
                while replies:
                    reply = reader.gets()
                    if reply is False:
                        break
                    replies -= 1
                    if isinstance(reply, hiredis.ReplyError) and error is None:
                        error = redis.ResponseError(str(reply))  # a refused command: read the rest, then report it
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
