"""The sensor registry against the real services: registration `known`, the registry's labels winning over
readings in PostgreSQL and Redis, ids reserved for the daemon, and `python -m pipeline.sensors` end to end."""
from __future__ import annotations

import json
import time

import pytest

from pipeline.config import Secret
from pipeline.records import Reading
from pipeline.sinks.redis_stream import RedisSink
from pipeline.tools.sensors import main as sensors_cli
from tests.integration.clients import Publisher, RunningPipeline, read_topic, wait_for


def cli(config, *argv) -> int:
    return sensors_cli(["--config", str(config), *argv])


def stored(env, sensor_id: str) -> list[float]:
    return [v for (v,) in env.query("SELECT value FROM measurements WHERE sensor_id = %s ORDER BY value", (sensor_id,))]


def registration(env, sensor_id: str):
    rows = env.query("SELECT type, location FROM sensors WHERE sensor_id = %s", (sensor_id,))
    return tuple(rows[0]) if rows else None


def letters_by_topic(topic: str, expected: int) -> dict[str, str]:
    """mqtt topic -> reason of the dead letters on `topic`."""
    got = read_topic(topic, expected=expected)
    headers = [{k: v.decode() for k, v in m.headers()} for m in got]
    return {h["mqtt_topic"]: h["reason"] for h in headers}


def reading(metric="temperature", value=1.0, **labels) -> str:
    return json.dumps({"metric": metric, "value": value, "timestamp": time.time(), **labels})


def test_known_mode_refuses_an_unknown_sensor_and_accepts_one_added_while_running(env, tmp_path):
    settings = env.migrate(env.settings(limits={"registration": "known", "registry_refresh_s": 1}))
    config = env.write_config(tmp_path / "c.yaml", limits={"registration": "known", "registry_refresh_s": 1})
    assert cli(config, "add", "dev-1", "--type", "boiler", "--location", "cellar") == 0
    pub = Publisher()
    try:
        with RunningPipeline(settings, env.metrics()):
            pub.publish_all([(f"{env.root}/dev-1", reading(value=1.0)), (f"{env.root}/dev-2", reading(value=2.0))])
            wait_for(lambda: stored(env, "dev-1") == [1.0], what="dev-1 stored")
            letters = letters_by_topic(settings.config.kafka.topics.dead_letter, expected=1)
            assert letters == {f"{env.root}/dev-2": "unknown_sensor"}
            assert stored(env, "dev-2") == [] and registration(env, "dev-2") is None

            assert cli(config, "add", "dev-2", "--type", "env") == 0
            time.sleep(2.5)  # the daemon rereads the table every second
            pub.publish_all([(f"{env.root}/dev-2", reading(value=3.0))])
            wait_for(lambda: stored(env, "dev-2") == [3.0], what="dev-2 stored once registered")
            assert registration(env, "dev-2") == ("env", None)
    finally:
        pub.close()


def test_a_reading_never_relabels_a_registered_sensor_in_postgres_or_redis(env, tmp_path):
    settings = env.migrate(env.settings(limits={"registry_refresh_s": 1}))
    config = env.write_config(tmp_path / "c.yaml")
    latest = f"{settings.config.redis.key_prefix}latest:dev-1"
    pub = Publisher()
    try:
        with RunningPipeline(settings, env.metrics()):
            pub.publish_all([(f"{env.root}/dev-1", reading(value=1.0, type="boiler", location="cellar"))])
            wait_for(lambda: env.redis.hget(latest, "temperature") == "1.0", what="first reading in Redis")
            wait_for(lambda: stored(env, "dev-1") == [1.0], what="first reading stored")
            assert registration(env, "dev-1") == ("boiler", "cellar")  # the first reading filled it in

            pub.publish_all([(f"{env.root}/dev-1", reading(value=2.0, type="hijack", location="roof"))])
            wait_for(lambda: env.redis.hget(latest, "temperature") == "2.0", what="second reading in Redis")
            wait_for(lambda: stored(env, "dev-1") == [1.0, 2.0], what="second reading stored")
            assert registration(env, "dev-1") == ("boiler", "cellar")
            assert env.redis.hmget(latest, "type", "location") == ["boiler", "cellar"]

            # A relabel through the registry reaches Redis at once and the daemon keeps to it.
            assert cli(config, "relabel", "dev-1", "--type", "pump", "--location", "well") == 0
            assert registration(env, "dev-1") == ("pump", "well")
            assert env.redis.hmget(latest, "type", "location") == ["pump", "well"]
            time.sleep(2.5)
            pub.publish_all([(f"{env.root}/dev-1", reading(value=3.0, type="hijack", location="roof"))])
            wait_for(lambda: env.redis.hget(latest, "temperature") == "3.0", what="third reading in Redis")
            wait_for(lambda: stored(env, "dev-1") == [1.0, 2.0, 3.0], what="third reading stored")
            assert env.redis.hmget(latest, "type", "location") == ["pump", "well"]
            assert registration(env, "dev-1") == ("pump", "well")
    finally:
        pub.close()


def test_reserved_ids_and_types_are_refused_while_the_daemons_own_log_counts_are_stored(env):
    logs_root = f"l{env.run_id}"
    # Known mode: the daemon's own readings are not registered by anyone, and are stored all the same.
    settings = env.migrate(env.settings(mqtt={"topics": [f"{env.root}/#", f"{logs_root}/#"]},
                                        logs={"topic_root": logs_root, "count_window_s": 2, "count_grace_s": 0.5},
                                        limits={"registration": "known"}))
    forged = [(f"{env.root}/app:billing", reading("log_error", 999.0)),
              (f"{env.root}/broker:localhost", reading("mqtt_dropped", 999.0)),
              (f"{env.root}/dev-9", reading(value=999.0, type="app"))]
    pub = Publisher()
    try:
        with RunningPipeline(settings, env.metrics()):
            pub.publish_all(forged + [(f"{logs_root}/billing", json.dumps({"level": "ERROR", "message": "boom"}))])
            letters = letters_by_topic(settings.config.kafka.topics.dead_letter, expected=3)
            assert letters == {f"{env.root}/app:billing": "reserved_sensor_id",
                               f"{env.root}/broker:localhost": "reserved_sensor_id",
                               f"{env.root}/dev-9": "reserved_sensor_type"}
            wait_for(lambda: 1.0 in stored(env, "app:billing"), timeout=30, what="the daemon's own log count")
    finally:
        pub.close()
    assert 999.0 not in stored(env, "app:billing") + stored(env, "broker:localhost") + stored(env, "dev-9")
    assert registration(env, "app:billing") == ("app", None)
    assert registration(env, "broker:localhost") is None and registration(env, "dev-9") is None


def test_the_command_end_to_end(env, tmp_path, capsys):
    settings = env.migrate()
    config = env.write_config(tmp_path / "c.yaml")
    prefix = settings.config.redis.key_prefix
    assert cli(config, "add", "dev-1", "--type", "boiler", "--location", "cellar") == 0
    assert cli(config, "add", "dev-1", "--type", "other") == 1  # registered already: unchanged
    assert cli(config, "add", "app:x", "--type", "env") == 1  # reserved
    assert registration(env, "dev-1") == ("boiler", "cellar") and registration(env, "app:x") is None

    csv_file = tmp_path / "fleet.csv"
    csv_file.write_text("sensor_id,type,location\ndev-1,pump,well\ndev-2,env,hall\ndev-3,env,\n")
    capsys.readouterr()
    assert cli(config, "import", str(csv_file)) == 0
    assert "added 2, relabelled 0, unchanged 1" in capsys.readouterr().out
    assert registration(env, "dev-1") == ("boiler", "cellar") and registration(env, "dev-3") == ("env", None)
    env.redis.hset(f"{prefix}latest:dev-1", mapping={"type": "boiler", "location": "cellar", "temperature": "1.0"})
    assert cli(config, "import", str(csv_file), "--update") == 0
    assert "added 0, relabelled 1, unchanged 2" in capsys.readouterr().out
    assert registration(env, "dev-1") == ("pump", "well")
    assert env.redis.hmget(f"{prefix}latest:dev-1", "type", "location") == ["pump", "well"]

    csv_file.write_text("dev-4,env,hall\ndev 5,env,hall\n")
    assert cli(config, "import", str(csv_file)) == 1  # one bad row: nothing stored
    assert "line 2" in capsys.readouterr().err and registration(env, "dev-4") is None

    assert cli(config, "relabel", "dev-2", "--no-location") == 0 and registration(env, "dev-2") == ("env", None)
    assert cli(config, "relabel", "nope", "--type", "env") == 1
    assert not env.redis.exists(f"{prefix}latest:dev-2")  # no readings yet: no mirror entry made up

    capsys.readouterr()
    assert cli(config, "list", "--json", "--type", "env") == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(s["sensor_id"], s["type"], s["location"]) for s in listed] == [("dev-2", "env", None), ("dev-3", "env", None)]

    env.query("INSERT INTO measurements (sensor_id, metric, value, timestamp) VALUES ('dev-1', 't', 1, now()) RETURNING id")
    # The Redis index as the daemon's Redis sink writes it (a sorted set by last write), with dev-1 in it.
    redis_sink = RedisSink(settings.config.redis, Secret(""), settings=settings.config.sinks.redis,
                           retry=settings.config.retry, metrics=env.metrics(), queue_max_batches=1)
    redis_sink.start()
    try:
        redis_sink.write([Reading("dev-1", "boiler", "cellar", "t", 1.0, time.time(), time.time())])
    finally:
        redis_sink.close()
    assert env.redis.zscore(f"{prefix}sensors", "dev-1") is not None
    assert cli(config, "remove", "dev-1") == 1  # stored readings: refused without --purge
    assert "measurements" in capsys.readouterr().err and registration(env, "dev-1") is not None
    assert cli(config, "remove", "dev-1", "--purge") == 0
    assert registration(env, "dev-1") is None and stored(env, "dev-1") == []
    assert not env.redis.exists(f"{prefix}latest:dev-1") and env.redis.zscore(f"{prefix}sensors", "dev-1") is None
    assert cli(config, "remove", "dev-3") == 0 and registration(env, "dev-3") is None


@pytest.mark.parametrize("mode", ["known", "open"])
def test_a_table_larger_than_max_sensors_keeps_every_registered_sensor_accepted_with_its_labels(env, mode):
    """The table keeps every sensor ever registered: past max_sensors (in id order) a registered sensor is still
    accepted and keeps its labels, before and after the daemon rereads the table."""
    settings = env.migrate(env.settings(limits={"registration": mode, "max_sensors": 3, "registry_refresh_s": 1}))
    with env.db() as conn:
        for i in range(6):
            conn.execute("INSERT INTO sensors (sensor_id, type, location) VALUES (%s, 'boiler', %s)", (f"dev-{i}", f"hall-{i}"))
    latest = f"{settings.config.redis.key_prefix}latest:dev-5"
    pub = Publisher()
    try:
        with RunningPipeline(settings, env.metrics()):
            pub.publish_all([(f"{env.root}/dev-5", reading(value=1.0, type="hijack", location="roof")),
                             (f"{env.root}/dev-0", reading(value=2.0)), (f"{env.root}/intruder", reading(value=3.0))])
            wait_for(lambda: stored(env, "dev-5") == [1.0] and stored(env, "dev-0") == [2.0], what="dev-5 and dev-0 stored")
            wait_for(lambda: env.redis.hget(latest, "temperature") == "1.0", what="dev-5 in Redis")
            assert env.redis.hmget(latest, "type", "location") == ["boiler", "hall-5"]
            if mode == "known":
                letters = letters_by_topic(settings.config.kafka.topics.dead_letter, expected=1)
                assert letters == {f"{env.root}/intruder": "unknown_sensor"}
            else:
                wait_for(lambda: stored(env, "intruder") == [3.0], what="a new sensor registered (room left)")
            time.sleep(2.5)  # the table is reread (dev-5 with it) every second
            pub.publish_all([(f"{env.root}/dev-5", reading(value=4.0, type="hijack", location="roof"))])
            wait_for(lambda: stored(env, "dev-5") == [1.0, 4.0], what="dev-5 again after a reread")
            assert env.redis.hmget(latest, "type", "location") == ["boiler", "hall-5"]
        assert registration(env, "dev-5") == ("boiler", "hall-5")
    finally:
        pub.close()
