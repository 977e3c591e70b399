"""The Redis sink against the real server: replies read in bulk, a refused command reported after every reply
is read, and the connection usable for the next write; on the raw RESP path and on redis-py's plain pipeline
(redis.fast_path: false)."""
import pytest
import redis

from pipeline.config import Secret
from pipeline.records import Reading
from pipeline.sinks.redis_stream import RedisSink


def sink_for(env, fast_path: bool = True) -> RedisSink:
    cfg = env.settings(redis={"fast_path": fast_path}).config
    sink = RedisSink(cfg.redis, Secret(""), settings=cfg.sinks.redis, retry=cfg.retry, metrics=env.metrics(),
                     queue_max_batches=1)
    sink.start()
    return sink


def readings(n: int, t0: float = 1_760_000_000.0) -> list[Reading]:
    return [Reading(f"d{i % 7}", "sensor", None, "temperature", 20.0 + i, t0 + i, t0 + i + 0.5) for i in range(n)]


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast_path", "plain"])
def test_a_large_write_reads_every_reply_and_a_refused_command_leaves_the_connection_usable(env, fast_path):
    sink = sink_for(env, fast_path)
    prefix = f"t{env.run_id}:"
    try:
        sink.write(readings(3000))  # replies span many socket reads
        assert env.redis.xlen(prefix + "readings") == 3000
        assert env.redis.hget(prefix + "latest:d6", "temperature") == repr(20.0 + 2995)

        env.redis.set(prefix + "latest:d3", "not a hash")  # HSET on it is refused (WRONGTYPE)
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            sink.write(readings(14, t0=1_760_001_000.0))
        assert env.redis.xlen(prefix + "readings") == 3014  # the other commands of that write were applied

        env.redis.delete(prefix + "latest:d3")
        sink.write(readings(14, t0=1_760_001_000.0))  # written again (the batch split to isolate the refusal)
        assert env.redis.xlen(prefix + "readings") == 3014  # the entries that write added are not added twice
        assert env.redis.hget(prefix + "latest:d3", "temperature") == repr(30.0)
        sink.write(readings(7, t0=1_760_002_000.0))  # the next write's replies are its own
        assert env.redis.xlen(prefix + "readings") == 3021
        assert env.redis.hget(prefix + "latest:d3", "temperature") == repr(23.0)
    finally:
        sink.close()


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast_path", "plain"])
def test_the_sensor_index_holds_active_sensors_and_latest_values_expire(env, fast_path):
    prefix = f"t{env.run_id}:"
    env.redis.sadd(prefix + "sensors", "old-1", "old-2")  # a plain set, as an older version wrote it
    sink = sink_for(env, fast_path)  # start() converts it: every id as seen now
    try:
        assert env.redis.type(prefix + "sensors") == "zset" and env.redis.zcard(prefix + "sensors") == 2
        now = [2_000_000_000.0]
        sink.clock = lambda: now[0]
        sink.write(readings(7))
        assert 86400 < env.redis.ttl(prefix + "latest:d3") <= 95040  # limits.state_idle_s and a tenth
        assert env.redis.zscore(prefix + "sensors", "d3") == 2_000_000_000
        env.redis.expire(prefix + "latest:d3", 1000)
        now[0] += 600  # d3 again within a tenth of the TTL: no EXPIRE sent (the TTL set above stays)
        sink.write([Reading("d3", "sensor", None, "temperature", 1.0, now[0], now[0])])
        assert env.redis.ttl(prefix + "latest:d3") <= 1000
        now[0] += 8640  # a tenth later: set again
        sink.write([Reading("d3", "sensor", None, "temperature", 1.0, now[0], now[0])])
        assert env.redis.ttl(prefix + "latest:d3") > 86400
        now[0] += 86400 + 1  # a day later only d0 writes: the others, and the converted ids, are trimmed
        sink.write([Reading("d0", "sensor", None, "temperature", 1.0, now[0], now[0])])
        assert env.redis.zrange(prefix + "sensors", 0, -1) == ["d0"]
    finally:
        sink.close()


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast_path", "plain"])
def test_a_write_refused_at_maxmemory_adds_nothing_and_its_retry_adds_each_entry_once(env, tmp_path, fast_path):
    """OOM is a refusal of the service (held and retried, not dead-lettered); the write is one MULTI/EXEC, so the
    refused try leaves no entry behind and the retry adds each reading exactly once."""
    from pipeline.clients.errors import is_refusal
    from tests.integration.services import redis_server

    server = redis_server(tmp_path).start()
    cfg = env.settings(redis={"fast_path": fast_path, "port": server.port}).config
    sink = RedisSink(cfg.redis, Secret(""), settings=cfg.sinks.redis, retry=cfg.retry, metrics=env.metrics(),
                     queue_max_batches=1)
    r = redis.Redis(port=server.port)
    stream = f"t{env.run_id}:readings"
    try:
        sink.start()
        sink.write(readings(100))
        r.config_set("maxmemory-policy", "noeviction")
        # Room for a part of the next write only: without a transaction its first entries would be added and the
        # rest refused, and the retry would add those first ones again.
        r.config_set("maxmemory", r.info("memory")["used_memory"] + 64 * 1024)
        batch = readings(3000, t0=1_760_001_000.0)
        with pytest.raises(redis.exceptions.OutOfMemoryError) as refused:
            sink.write(batch)
        assert is_refusal(refused.value)
        assert r.xlen(stream) == 100  # none of the refused write's entries
        r.config_set("maxmemory", 0)
        sink.write(batch)
        ids = [fields[b"id"] for _e, fields in r.xrange(stream)]
        assert len(ids) == 3100 and len(set(ids)) == 3100
    finally:
        sink.close()
        server.stop()


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast_path", "plain"])
def test_splitting_a_batch_to_isolate_a_refused_record_adds_each_stream_entry_once(env, fast_path):
    """A command of the write fails for one sensor (its latest-value key holds a string): the batch is halved down
    to that sensor's readings, and each write of a half is tried again; the stream still holds each reading once."""
    cfg = env.settings(redis={"fast_path": fast_path}).config
    letters = []
    sink = RedisSink(cfg.redis, Secret(""), settings=cfg.sinks.redis, retry=cfg.retry, metrics=env.metrics(),
                     queue_max_batches=1, dead_letters=type("Letters", (), {"send": lambda self, d, **_: letters.extend(d)})())
    prefix = f"t{env.run_id}:"
    try:
        sink.start()
        env.redis.set(prefix + "latest:d3", "not a hash")
        refused = []
        sink._write_isolating(readings(64), refused)  # noqa: SLF001 - the base sink's halving, on a real server
        sink._dead_letter(refused)  # noqa: SLF001
        ids = [fields["id"] for _e, fields in env.redis.xrange(prefix + "readings")]
        assert len(ids) == 64 and len(set(ids)) == 64
        assert sorted(r.sensor_id for r, *_ in refused) == ["d3"] * 9  # only the sensor whose command failed
    finally:
        sink.close()
