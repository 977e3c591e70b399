"""The Redis sink's fast path (`redis.fast_path: true`): commands written as RESP by hand, replies read in bulk.

This is the one module that relies on redis-py's internals, written against redis==8.1.0 and hiredis==3.5.0
(requirements.txt pins both exactly; tests/unit/sinks/test_redis_wire_contract.py fails on any other
version). What it relies on:
  - `Connection._sock` (private): the connected socket, read directly after `send_packed_command()`; this
    assumes redis-py's own parser holds no unread bytes between commands and reads nothing by itself.
  - `ConnectionPool.get_connection()` without arguments, `ConnectionPool.release()`,
    `Connection.send_packed_command()` and `Connection.disconnect()` (public, but not meant for callers that
    then read the socket themselves).
  - `hiredis.Reader` with `feed()`/`gets()`, and `hiredis.ReplyError` for a refused command.
RESP itself is the server's protocol (stable since Redis 2); the encoding below is checked against
redis-py's plain pipeline on a real server (tests/integration/test_redis_wire_roundtrip.py).

Why: redis-py's pipeline encodes every argument and parses every reply into a Python object one command at a
time; at 10,000 readings/s that cost more CPU than everything else in the sink. `redis.fast_path: false` uses
that plain pipeline instead (pipeline/sinks/redis_stream.py): the same stream entries and keys, slower (figures
in bench/RESULTS.md). Maintained alternatives checked from their documentation (2026-12-01): redis-py already
parses replies with hiredis when it is installed (the plain path has that); hiredis's public `pack_command()`
packs one command per call from Python arguments, the per-argument work the f-strings here avoid; no redis-py
option sends pre-encoded commands and reads their replies in bulk.
"""
from __future__ import annotations

from itertools import chain
from typing import Iterable, Iterator, Sequence

import hiredis
import redis

from ..clients.errors import redis_reply_error
from ..records import Reading

MULTI = b"*1\r\n$5\r\nMULTI\r\n"
EXEC = b"*1\r\n$4\r\nEXEC\r\n"
SEND_AT_LEAST = 1 << 18  # bytes per socket write of a payload sent in pieces (coalesced)

WRITTEN_FOR = {"redis": "8.1.0", "hiredis": "3.5.0"}  # the versions this module was checked against


def bulk(arg: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


def pack(*args: bytes) -> bytes:
    """One Redis command in the RESP wire format."""
    return b"*%d\r\n" % len(args) + b"".join([bulk(a) for a in args])


def xadd_head(stream: str, maxlen: int) -> str:
    """`XADD <stream> MAXLEN ~ <maxlen> *` and the array header for six field/value pairs after it."""
    return (b"*18\r\n" + b"".join(bulk(a) for a in (
        b"XADD", stream.encode(), b"MAXLEN", b"~", str(maxlen).encode(), b"*"))).decode()


def xadd_fields(r: Reading) -> str:
    """The six field/value pairs of a reading's stream entry in RESP, as one str: every part is ASCII
    (ids and metrics are validated ASCII, numbers are repr()), so character counts are byte counts and the
    whole write is encoded once."""
    rid, sid, metric = r.reading_id, r.sensor_id, r.metric
    value, ts, recv = repr(r.value), repr(r.ts), repr(r.received_at)
    return (f"$2\r\nid\r\n${len(rid)}\r\n{rid}\r\n$9\r\nsensor_id\r\n${len(sid)}\r\n{sid}\r\n"
            f"$6\r\nmetric\r\n${len(metric)}\r\n{metric}\r\n$5\r\nvalue\r\n${len(value)}\r\n{value}\r\n"
            f"$2\r\nts\r\n${len(ts)}\r\n{ts}\r\n$11\r\nreceived_at\r\n${len(recv)}\r\n{recv}\r\n")


def xadd_entries(head: str, records: Sequence[Reading]) -> bytes:
    """`head` (xadd_head) and xadd_fields of every reading, encoded once: the same bytes, but the parts a
    message's readings share (sensor id, event time, receive time: one object each per message) are written
    once per message, and a metric's field once per call, not once per reading."""
    parts: list[str] = []
    append = parts.append
    id_head = f"{head}$2\r\nid\r\n$"
    metric_parts: dict[str, str] = {}  # metric -> its field, and the value field's name
    sid = ts = recv = None
    id_len = 0  # of Reading.reading_id without the metric
    id_tail = tail = ""
    for r in records:
        if r.sensor_id is not sid or r.ts is not ts or r.received_at is not recv:
            sid, ts, recv = r.sensor_id, r.ts, r.received_at
            micros = f"|{round(ts * 1_000_000)}"  # Reading.reading_id after the metric
            id_len = len(sid) + 1 + len(micros)
            id_tail = f"{micros}\r\n$9\r\nsensor_id\r\n${len(sid)}\r\n{sid}\r\n"
            ts_text, recv_text = repr(ts), repr(recv)
            tail = (f"$2\r\nts\r\n${len(ts_text)}\r\n{ts_text}\r\n"
                    f"$11\r\nreceived_at\r\n${len(recv_text)}\r\n{recv_text}\r\n")
        metric, value = r.metric, repr(r.value)
        fields = metric_parts.get(metric)
        if fields is None:
            fields = metric_parts[metric] = f"$6\r\nmetric\r\n${len(metric)}\r\n{metric}\r\n$5\r\nvalue\r\n$"
        append(f"{id_head}{id_len + len(metric)}\r\n{sid}|{metric}{id_tail}{fields}{len(value)}\r\n{value}\r\n{tail}")
    return "".join(parts).encode()


def latest_fields(r: Reading) -> str:
    """`<metric> <value> <metric>:ts <ts>` of a latest-value hash in RESP (ASCII, as in xadd_fields)."""
    metric, value, ts = r.metric, repr(r.value), repr(r.ts)
    return (f"${len(metric)}\r\n{metric}\r\n${len(value)}\r\n{value}\r\n"
            f"${len(metric) + 3}\r\n{metric}:ts\r\n${len(ts)}\r\n{ts}\r\n")


def hset_latest(key: str, r: Reading, fields: list[str]) -> bytes:
    """HSET <key> type <t> location <l> and the metric fields (type and location may be any text)."""
    return b"*%d\r\n$4\r\nHSET\r\n%s$4\r\ntype\r\n%s$8\r\nlocation\r\n%s%s" % (
        6 + 4 * len(fields), bulk(key.encode()), bulk(r.sensor_type.encode()), bulk((r.location or "").encode()),
        "".join(fields).encode())


def send(client: redis.Redis, payload: bytes, replies: int) -> None:
    """One write of every command, then every reply: what a pipeline does, minus redis-py's per-argument
    encoding and per-reply parsing. The replies are parsed in bulk by hiredis from the connection's socket;
    redis-py still connects, authenticates, checks health and reconnects. A refused command is raised as
    the redis-py exception of its error code (OutOfMemoryError for OOM, ...) once every reply is read (like a
    pipeline's execute())."""
    _exchange(client, (payload,), replies)


def coalesced(parts: Iterable[bytes], at_least: int = SEND_AT_LEAST) -> Iterator[bytes]:
    """The pieces joined into writes of at least `at_least` bytes (the last may be shorter): a small
    transaction stays one write (one syscall), a large one is sent piece by piece as it is encoded."""
    held: list[bytes] = []
    size = 0
    for part in parts:
        held.append(part)
        size += len(part)
        if size >= at_least:
            yield held[0] if len(held) == 1 else b"".join(held)
            held, size = [], 0
    if held:
        yield b"".join(held)


def send_transaction(client: redis.Redis, payload: bytes | Iterable[bytes], commands: int) -> list:
    """The commands in MULTI/EXEC: a write that the server refuses (out of memory, read-only) takes no effect
    at all, so its retry never adds a stream entry twice. A command refused when queued is raised (not the
    EXECABORT that follows it). Otherwise EXEC's replies are returned, one per command, a command that failed
    inside EXEC (the others did take effect) as its redis-py exception. `payload` may be pieces (an iterator),
    encoded as they are sent: a large batch is then never held encoded whole."""
    parts = (payload,) if isinstance(payload, bytes) else payload
    replies = _exchange(client, chain((MULTI,), parts, (EXEC,)), commands + 2)
    return [redis_reply_error(str(r)) if isinstance(r, hiredis.ReplyError) else r for r in replies]


def _exchange(client: redis.Redis, parts: Iterable[bytes], replies: int):
    """Send the payload's parts, read `replies` replies; raise the first error reply, else return the last reply."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command(coalesced(parts))
        reader = hiredis.Reader()
        sock = conn._sock
        error = last = None
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
                last = reply
                if isinstance(reply, hiredis.ReplyError) and error is None:
                    error = redis_reply_error(str(reply))  # a refused command: read the rest, then report it
        if error is not None:
            raise error
        return last
    except BaseException:
        conn.disconnect()  # unread replies would be taken for the next command's
        raise
    finally:
        pool.release(conn)
