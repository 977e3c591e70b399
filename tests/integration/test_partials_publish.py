"""The window store's partials: packed by hiredis and sent as one write (redis.fast_path: true), they are the
hashes redis-py's pipeline (fast_path: false) writes; a refused command raises and leaves the client usable."""
import pytest
import redis

from pipeline.config import Secret, parse
from pipeline.operators.windows.store import WindowStore
from pipeline.operators.windows.partials import Partials
from pipeline.operators.windows.tracker import US, WindowTracker

T0 = 1_760_000_000


def store(prefix: str, fast_path: bool) -> WindowStore:
    cfg = parse({"redis": {"host": "127.0.0.1", "key_prefix": prefix, "fast_path": fast_path}}, {})
    s = WindowStore(cfg.redis, Secret(""), state_idle_s=1000.0)
    s.start(None)  # type: ignore[arg-type]  # no PostgreSQL here
    return s


def fields() -> list[tuple[str, list[str]]]:
    p = Partials(WindowTracker(["1m", "1h"], 0, 30))
    for i in range(300):  # 300 sensors x 2 metrics x 2 periods: more than one PARTIALS_CHUNK
        for metric in ("temperature", "humidity"):
            p.add(f"s{i:03d}", metric, (T0 + i) * US, 20.0 + i / 7, 0.0)
            p.add(f"s{i:03d}", metric, (T0 + i + 1) * US, -1e-300 * i, 0.0)
    return [(f"s{i:03d}", p.encoded(f"s{i:03d}", ["temperature", "humidity"])) for i in range(300)] + [("idle", [])]


def held(r: redis.Redis, prefix: str) -> dict:
    out = {}
    for key in r.scan_iter(prefix + "*", count=1000):
        out[key.decode()[len(prefix):]] = (r.hgetall(key), 1000 < r.ttl(key) <= 1100)
    return out


def test_the_packed_partials_are_what_the_pipeline_writes_and_a_refusal_raises(env):
    r = redis.Redis(host="127.0.0.1")
    fast, plain = f"t{env.run_id}:fast:", f"t{env.run_id}:plain:"
    stores = [store(fast, True), store(plain, False)]
    try:
        for s in stores:
            s.publish_partials(fields(), now=0.0)
        got = held(r, fast)
        assert len(got) == 300 and all(len(h) == 4 and expires for h, expires in got.values())
        assert got == held(r, plain)

        r.set(fast + "partial:s001", "a string")  # HSET on it: WRONGTYPE
        with pytest.raises(redis.ResponseError):
            stores[0].publish_partials(fields()[:3], now=2000.0)
        stores[0].publish_partials(fields()[5:6], now=2000.0)  # the connection with unread replies was dropped
        assert r.hget(fast + "partial:s005", "temperature:1m") == got["partial:s005"][0][b"temperature:1m"]
    finally:
        for s in stores:
            s.stop()
        for key in list(r.scan_iter(f"t{env.run_id}:*", count=1000)):
            r.delete(key)
