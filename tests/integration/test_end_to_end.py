"""A reading travels MQTT -> Kafka -> processing -> PostgreSQL and Redis; bad ones reach the dead-letter topic."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

from tests.integration.clients import Publisher, RunningPipeline, read_topic, wait_for


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc).replace(tzinfo=None)


def test_readings_reach_postgres_and_redis_and_bad_ones_the_dead_letter_topic(env):
    settings = env.migrate()
    topics = settings.config.kafka.topics
    assert all(t.startswith(f"t{env.run_id}.") for t in (topics.raw, topics.dead_letter, topics.dead_letter_failed,
                                                        topics.dead_letter_exhausted))  # no test writes shared topics
    metrics = env.metrics()
    root = env.root
    t0 = round(time.time()) - 60
    valid = [
        (f"{root}/hall-a", json.dumps({"type": "environment", "location": "hall-3", "timestamp": t0,
                                        "readings": {"temperature": 21.5, "humidity": 40.25}})),
        (f"{root}/hall-a", json.dumps({"metric": "pressure", "value": 1012.75, "timestamp": datetime.fromtimestamp(t0 + 1, timezone.utc).isoformat()})),
        (f"{root}/tiny-7/temperature", "19.5"),
    ]
    invalid = [
        (f"{root}/hall-a", "{not json", "invalid_json"),
        (f"{root}/hall-a", json.dumps({"metric": "temperature", "value": "hot"}), "value_not_number"),
        (f"{root}/{'x' * 51}", json.dumps({"metric": "temperature", "value": 1}), "sensor_id_too_long"),
        (f"{root}/hall-a/temperature/extra", "1", "topic_too_deep"),
        (f"{root}/hall-a", json.dumps({"metric": "temperature", "value": 1, "timestamp": t0 + 86400}), "timestamp_in_future"),
    ]
    with RunningPipeline(settings, metrics):
        pub = Publisher()
        # Invalid messages interleaved with valid ones: the valid ones must still arrive.
        items = [valid[0], invalid[0][:2], valid[1], *[i[:2] for i in invalid[1:]], valid[2]]
        pub.publish_all(items)
        pub.close()
        wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] == 4, what="4 measurement rows")
        dead = read_topic(settings.config.kafka.topics.dead_letter, expected=len(invalid))
        wait_for(lambda: env.redis.xlen(f"t{env.run_id}:readings") == 4, what="4 stream entries")

    rows = env.query("SELECT sensor_id, metric, value, timestamp, processed FROM measurements ORDER BY id")
    by_metric = {(r[0], r[1]): r for r in rows}
    assert set(by_metric) == {("hall-a", "temperature"), ("hall-a", "humidity"), ("hall-a", "pressure"), ("tiny-7", "temperature")}
    assert by_metric[("hall-a", "temperature")][2:] == (21.5, utc(t0), False)
    assert by_metric[("hall-a", "humidity")][2:] == (40.25, utc(t0), False)
    assert by_metric[("hall-a", "pressure")][2:] == (1012.75, utc(t0 + 1), False)
    tiny = by_metric[("tiny-7", "temperature")]
    assert tiny[2] == 19.5 and abs((tiny[3] - utc(time.time())).total_seconds()) < 30  # receive time

    sensors = env.query("SELECT sensor_id, type, location FROM sensors ORDER BY sensor_id")
    assert sensors == [("hall-a", "environment", "hall-3"), ("tiny-7", "sensor", None)]

    entries = env.redis.xrange(f"t{env.run_id}:readings")
    fields = sorted((e["sensor_id"], e["metric"], float(e["value"])) for _, e in entries)
    assert fields == [("hall-a", "humidity", 40.25), ("hall-a", "pressure", 1012.75), ("hall-a", "temperature", 21.5),
                      ("tiny-7", "temperature", 19.5)]
    assert all(e["id"].startswith(f"{e['sensor_id']}|{e['metric']}|") for _, e in entries)
    latest = env.redis.hgetall(f"t{env.run_id}:latest:hall-a")
    assert float(latest["temperature"]) == 21.5 and float(latest["pressure"]) == 1012.75
    assert float(latest["pressure:ts"]) == t0 + 1 and latest["location"] == "hall-3"
    assert set(env.redis.zrange(f"t{env.run_id}:sensors", 0, -1)) == {"hall-a", "tiny-7"}

    got = sorted((dict(m.headers())["reason"].decode(), m.value()) for m in dead)
    want = sorted((reason, payload.encode()) for _, payload, reason in invalid)
    assert got == want
    for m in dead:
        h = {k: v.decode() for k, v in m.headers()}
        assert h["stage"] in ("decode", "validate") and h["source_topic"] == settings.config.kafka.topics.raw
        assert int(h["source_offset"]) >= 0 and h["mqtt_topic"].startswith(root + "/")
    assert metrics.registry.get_sample_value("pipeline_dead_letters_total", {"kind": "invalid", "reason": "invalid_json"}) == 1
    assert metrics.registry.get_sample_value("pipeline_sink_records_written_total", {"sink": "postgres"}) == 4
