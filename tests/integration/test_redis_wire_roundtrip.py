"""The Redis sink's raw RESP path (redis.fast_path: true) writes exactly what redis-py's plain pipeline
(redis.fast_path: false) writes: the same stream entries, field by field and in order, the same identities, the
same latest-value hashes and sensor set."""
import redis

from pipeline.config import Secret, parse
from pipeline.records import Reading
from pipeline.sinks.redis_stream import RedisSink


def sink(env, prefix: str, fast_path: bool) -> RedisSink:
    cfg = parse({"redis": {"host": "127.0.0.1", "key_prefix": prefix, "fast_path": fast_path}}, {})
    s = RedisSink(cfg.redis, Secret(""), settings=cfg.sinks.redis, retry=cfg.retry, metrics=env.metrics(),
                  queue_max_batches=1)
    s.start()
    return s


def batches() -> list[list[Reading]]:
    t0 = 1_760_000_000.0
    first = [Reading(f"d{i % 5}", "thermo", "Zürich – Halle 1" if i % 2 else None, ("temperature", "humidity")[i % 3 == 0],
                     20.0 + i / 7, t0 + i * 0.125, t0 + i * 0.125 + 0.0625) for i in range(200)]
    first.append(Reading("d1", "thermo", None, "temperature", -3.5, t0 - 60, t0 + 100))  # late in its batch
    second = [Reading("s-9", "typ mit Ümlaut", "", "pressure", 1e-7, t0 + 1e6, t0 + 1e6 + 1)]
    return [first, second]  # ids and metrics are ASCII: the decode stage admits nothing else


def snapshot(prefix: str) -> dict:
    """Everything under the prefix, as the server holds it (bytes, not decoded)."""
    r = redis.Redis(host="127.0.0.1")
    keys = sorted(k.decode()[len(prefix):] for k in r.scan_iter(prefix + "*", count=1000))
    out = {"keys": keys, "stream": [fields for _id, fields in r.xrange(prefix + "readings")],
           "sensors": sorted(r.zrange(prefix + "sensors", 0, -1))}
    for k in keys:
        if k.startswith("latest:"):
            out[k] = r.hgetall(prefix + k)
            out[k + " expires"] = 86400 < r.ttl(prefix + k) <= 95040
    return out


def test_the_raw_path_writes_what_redis_py_writes(env):
    fast, plain = f"t{env.run_id}:fast:", f"t{env.run_id}:plain:"
    sinks = [sink(env, fast, True), sink(env, plain, False)]
    try:
        for batch in batches():
            for s in sinks:
                s.write(batch)
    finally:
        for s in sinks:
            s.close()
    a, b = snapshot(fast), snapshot(plain)
    assert len(a["stream"]) == 202 and a["stream"][0][b"id"] == b"d0|humidity|1760000000000000"
    assert a["keys"] == b["keys"] == sorted(["readings", "sensors", "latest:s-9"] + [f"latest:d{i}" for i in range(5)])
    assert [list(f.items()) for f in a["stream"]] == [list(f.items()) for f in b["stream"]]  # fields in order too
    assert a == b
    assert a["latest:d1"][b"temperature"] != repr(-3.5).encode()  # the late reading did not overwrite
    assert a["latest:s-9"] == {b"type": "typ mit Ümlaut".encode(), b"location": b"", b"pressure": b"1e-07",
                               b"pressure:ts": repr(1_760_000_000.0 + 1e6).encode()}


def test_a_connected_connection_exposes_the_socket_the_raw_path_reads(env):
    s = sink(env, f"t{env.run_id}:sock:", True)
    try:
        pool = s.client.connection_pool
        conn = pool.get_connection()
        try:
            assert hasattr(conn._sock, "recv")  # redis_wire.send reads the replies from it
        finally:
            pool.release(conn)
    finally:
        s.close()
