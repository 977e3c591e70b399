"""The Redis sink's hand-built RESP: every command parses back to the arguments meant, any text included."""
import hiredis
from prometheus_client import CollectorRegistry

from pipeline.config import Secret, parse
from pipeline.observability.metrics import Metrics
from pipeline.records import Reading
from pipeline.sinks.redis_stream import RedisSink


def commands_written(records) -> tuple[list[list[bytes]], int]:
    cfg = parse({"redis": {"key_prefix": "pré:", "stream_maxlen": 500}}, {})
    sink = RedisSink(cfg.redis, Secret(""), settings=cfg.sinks.redis, retry=cfg.retry, clock=lambda: 1_760_000_100.7,
                     metrics=Metrics(CollectorRegistry()), queue_max_batches=1)
    sent = []
    sink._send = lambda payload, replies: sent.append((b"".join(payload), replies)) or []  # noqa: SLF001 - no Redis here
    sink.write(records)
    [(payload, replies)] = sent
    # A server reads commands as arrays of bulk strings: so does hiredis.
    reader = hiredis.Reader()
    reader.feed(payload)
    out = []
    while (cmd := reader.gets()) is not False:
        out.append(cmd)
    return out, replies


def test_stream_entries_latest_values_and_sensor_set():
    a1 = Reading("hall-1", "thermo", "Zürich – Halle 1", "temperature", 21.5, 1_760_000_000.25, 1_760_000_000.5)
    a2 = Reading("hall-1", "thermo", "Zürich – Halle 1", "temperature", 22.0, 1_760_000_001.0, 1_760_000_001.5)
    b = Reading("b", "sensor", None, "humidity", 40.125, 1_760_000_000.0, 1_760_000_000.75)
    cmds, replies = commands_written([a2, b, a1])  # a1 arrives late: the latest value stays a2's
    assert replies == len(cmds) == 3 + 2 * 2 + 2
    assert cmds[0] == [b"XADD", "pré:readings".encode(), b"MAXLEN", b"~", b"500", b"*",
                       b"id", b"hall-1|temperature|1760000001000000", b"sensor_id", b"hall-1", b"metric", b"temperature",
                       b"value", b"22.0", b"ts", b"1760000001.0", b"received_at", b"1760000001.5"]
    assert cmds[2][7] == b"hall-1|temperature|1760000000250000"
    assert cmds[3] == [b"HSET", "pré:latest:hall-1".encode(), b"type", b"thermo", b"location",
                       "Zürich – Halle 1".encode(), b"temperature", b"22.0", b"temperature:ts", b"1760000001.0"]
    assert cmds[4] == [b"HSET", "pré:latest:b".encode(), b"type", b"sensor", b"location", b"", b"humidity", b"40.125",
                       b"humidity:ts", b"1760000000.0"]
    # Each latest-value hash expires after limits.state_idle_s (default a day) and a tenth without a reading.
    assert cmds[5] == [b"EXPIRE", "pré:latest:hall-1".encode(), b"95040"]
    assert cmds[6] == [b"EXPIRE", "pré:latest:b".encode(), b"95040"]
    # The sensor index: last write time per id, and ids silent longer than state_idle_s trimmed.
    assert cmds[7] == [b"ZADD", "pré:sensors".encode(), b"1760000100", b"hall-1", b"1760000100", b"b"]
    assert cmds[8] == [b"ZREMRANGEBYSCORE", "pré:sensors".encode(), b"-inf", b"(1759913700"]


def test_a_large_batch_is_sent_in_pieces_with_the_same_commands():
    from pipeline.sinks import redis_stream, redis_wire

    records = [Reading(f"s{i % 7}", "thermo", None, f"m{i % 50}", i / 3, 1_760_000_000.0 + i, 1_760_000_000.5 + i)
               for i in range(3 * redis_stream.XADD_PIECE + 5)]
    cfg = parse({"redis": {"stream_maxlen": 500}}, {})
    sink = RedisSink(cfg.redis, Secret(""), settings=cfg.sinks.redis, retry=cfg.retry, clock=lambda: 1_760_000_100.7,
                     metrics=Metrics(CollectorRegistry()), queue_max_batches=1)
    pieces = list(sink._commands(records, redis_stream.latest_per_sensor(records), [], 1_760_000_100.7))  # noqa: SLF001
    assert len(pieces) > 4  # encoded piece by piece, never as one buffer
    assert pieces[0] == redis_wire.xadd_entries(sink._xadd_head, records[:redis_stream.XADD_PIECE])  # noqa: SLF001
    assert b"".join(pieces).startswith(redis_wire.xadd_entries(sink._xadd_head, records))  # noqa: SLF001
    cmds, replies = commands_written(records)
    assert replies == len(cmds) == len(records) + 7 + 7 + 2


def test_pieces_are_coalesced_into_writes_of_a_minimum_size():
    from pipeline.sinks.redis_wire import coalesced

    assert list(coalesced([b"ab", b"c", b"def", b"g"], at_least=3)) == [b"abc", b"def", b"g"]
    assert list(coalesced([b"abcd"], at_least=3)) == [b"abcd"]
    assert list(coalesced([], at_least=3)) == []
