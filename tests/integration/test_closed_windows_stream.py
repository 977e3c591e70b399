"""The closed windows' stream entries are the same with redis.fast_path (packed by hand, one write a chunk) as
with redis-py's plain MULTI/EXEC pipeline, field by field and in order, across a chunk boundary; and a command the
server refuses inside the transaction raises on both paths, so the closing is retried, never taken as published."""
import pytest
import redis

from pipeline.config import Secret, parse
from pipeline.operators.windows import store as window_store
from pipeline.operators.windows.store import WindowStore
from pipeline.operators.windows.tracker import US, Window


def published(env, fast_path: bool, entries, monkeypatch) -> list[dict]:
    prefix = f"t{env.run_id}:{'fast' if fast_path else 'plain'}:"
    cfg = parse({"redis": {"host": "127.0.0.1", "key_prefix": prefix, "fast_path": fast_path}}, {})
    s = WindowStore(cfg.redis, Secret(""))
    s.redis = redis.Redis(host="127.0.0.1")
    monkeypatch.setattr(window_store, "CLOSED_CHUNK", 7)  # several chunks, the last one short
    s.publish_closed(entries)
    return [fields for _id, fields in s.redis.xrange(s.stream)]


def entries() -> list:
    t0 = 1_760_000_040 * US
    out = []
    for i in range(30):
        window = Window(("1m", "5m")[i % 2], t0 + i * 60 * US, t0 + (i + 1) * 60 * US)
        out.append((window, (f"d-{i % 4}", ("temperature", "humidity")[i % 3 == 0], 20.0 + i / 7, -1e-7 * i,
                             1e300 if i == 3 else 30.5, i + 1)))
    return out


def test_fast_and_plain_paths_write_the_same_entries(env, monkeypatch):
    fast = published(env, True, entries(), monkeypatch)
    plain = published(env, False, entries(), monkeypatch)
    assert len(fast) == 30 and fast == plain
    assert fast[3][b"max"] == b"1e+300" and fast[0][b"id"] == b"d-0|humidity|1m|1760000040"


@pytest.mark.parametrize("fast_path", [True, False])
def test_a_refused_entry_inside_the_transaction_raises(env, fast_path, monkeypatch):
    prefix = f"t{env.run_id}:refused{int(fast_path)}:"
    cfg = parse({"redis": {"host": "127.0.0.1", "key_prefix": prefix, "fast_path": fast_path}}, {})
    s = WindowStore(cfg.redis, Secret(""))
    s.redis = redis.Redis(host="127.0.0.1")
    s.redis.set(s.stream, "not a stream")  # XADD is refused at EXEC time: WRONGTYPE
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        s.publish_closed(entries()[:3])
    s.redis.delete(s.stream)
    s.publish_closed(entries()[:3])  # the connection is usable again
    assert len(s.redis.xrange(s.stream)) == 3
