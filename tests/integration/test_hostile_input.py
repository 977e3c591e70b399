"""A corpus of hostile payloads and topics, published between valid readings through the real services:
each bad one lands in the dead-letter topic with its reason, every valid one is stored, nothing stalls."""
from __future__ import annotations

import json
import time

from tests.integration.clients import Publisher, RunningPipeline, read_topic, wait_for

NOW = time.time()
J = json.dumps


def corpus(root: str) -> list[tuple[str, bytes, str]]:
    """(topic, payload, expected dead-letter reason)."""
    s = f"{root}/dev-x"
    one = lambda **kw: J({"metric": "temperature", "value": 20.5, **kw}).encode()  # noqa: E731
    cases = [
        (s, b"{\"metric\": \"temperature\", \"value\": 1", "invalid_json"),
        (s, b"\xc3\x28\xa0\xa1", "invalid_utf8"),
        (s, b"", "payload_empty"),
        (s, b"   \n\t ", "payload_empty"),
        (s, b"42", "not_an_object"),
        (s, b"[{\"metric\": \"temperature\", \"value\": 1}]", "not_an_object"),
        (s, b"null", "not_an_object"),
        (s, one(value={"celsius": 20}), "value_not_number"),
        (s, one(value=[20]), "value_not_number"),
        (s, one(value="20.5"), "value_not_number"),
        (s, one(value=True), "value_not_number"),
        (s, one(value=None), "value_not_number"),
        (s, b"{\"metric\": \"temperature\", \"value\": NaN}", "invalid_json"),
        (s, b"{\"metric\": \"temperature\", \"value\": Infinity}", "invalid_json"),
        (s, b"{\"metric\": \"temperature\", \"value\": 1e309}", "value_not_finite"),
        (s, b"{\"metric\": \"temperature\", \"value\": -" + b"9" * 400 + b"}", "value_not_finite"),
        (s, J({"metric": "temperature"}).encode(), "missing_field"),
        (s, J({"value": 1}).encode(), "missing_field"),
        (s, one(sensor="dev-x"), "unknown_field"),
        (s, J({"readings": {"temperature": {"value": 1}}}).encode(), "value_not_number"),
        (s, J({"readings": "temperature=1"}).encode(), "readings_not_object"),
        (f"{root}/{'d' * 51}", one(), "sensor_id_too_long"),
        (f"{root}/", one(), "topic_missing_sensor_id"),
        (f"{root}/dev\"quoted\"", one(), "sensor_id_invalid"),
        (f"{root}/x';DROP TABLE sensors;--", one(), "sensor_id_invalid"),
        (f"{root}/capteur-été", one(), "sensor_id_invalid"),
        (f"{root}/dev x", one(), "sensor_id_invalid"),
        (f"{root}/dev-x/temperature/celsius", b"20", "topic_too_deep"),
        (f"{root}/a/b/c/d/e", one(), "topic_too_deep"),
        (s, J({"metric": "t" * 21, "value": 1}).encode(), "metric_too_long"),
        (s, J({"metric": "air temperature", "value": 1}).encode(), "metric_invalid"),
        (s, J({"metric": "temp\u0007", "value": 1}).encode(), "metric_invalid"),
        (s, J({"metric": "1;DELETE FROM m", "value": 1}).encode(), "metric_invalid"),
        (s, J({"metric": "x' OR '1'='1", "value": 1}).encode(), "metric_invalid"),
        (s, one(location="hall\u0000\u0001"), "location_invalid"),
        (s, one(type="env');DROP--"), "type_invalid"),
        (s, one(type="environment-sensor-x1"), "type_too_long"),
        (s, one(timestamp=NOW + 10 * 365 * 86400), "timestamp_in_future"),
        (s, one(timestamp="1969-07-20T20:17:00Z"), "timestamp_too_old"),
        (s, one(timestamp="half past ten"), "timestamp_invalid"),
        (s, one(timestamp=-5), "timestamp_invalid"),
        (s, one(timestamp="20/11/2026 10:00"), "timestamp_invalid"),
        (s, one(timestamp=[2026, 11, 27]), "timestamp_invalid"),
        (s, b"{\"metric\": \"temperature\", \"value\": 1, \"value\": 2}", "duplicate_key"),
        (s, b"{\"x\": \"" + b"A" * (1024 * 1024) + b"\"}", "payload_too_large"),
        (s, J({"readings": {f"m{i}": i for i in range(10_000)}}).encode(), "payload_too_large"),
        (s, J({"readings": {f"m{i}": i for i in range(101)}}).encode(), "too_many_readings"),
        (f"{root}/dev-x/temperature", b"twenty", "value_not_number"),
        (f"{root}/dev-x/temperature", b"inf", "value_not_number"),
        (s, one(unit="furlongs"), "unknown_unit"),
        # Nesting: refused by name, never a processing failure (900 levels once raised RecursionError).
        (s, b'{"metric": "temperature", "value": 1, "location": ' + b"[" * 900 + b"]" * 900 + b"}", "json_too_deep"),
        (s, b'{"a":' * 900 + b"1" + b"}" * 900, "json_too_deep"),
    ]
    return cases


def test_hostile_corpus_is_dead_lettered_with_reasons_and_valid_readings_still_arrive(env):
    settings = env.migrate()
    cases = corpus(env.root)
    assert len(cases) >= 40 and len({(t, p) for t, p, _ in cases}) == len(cases)
    items = []
    for i, (topic, payload, _) in enumerate(cases):
        items.append((topic, payload))
        # A valid reading after every bad one: ingest must not stall behind bad input.
        items.append((f"{env.root}/good-{i % 5}", J({"metric": "temperature", "value": i, "timestamp": NOW - 100 + i}).encode()))
    with RunningPipeline(settings, env.metrics()) as pipeline:
        pub = Publisher()
        pub.publish_all(items)
        pub.close()
        wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] == len(cases), 30, what="every valid reading")
        dead = read_topic(settings.config.kafka.topics.dead_letter, expected=len(cases), timeout=30)
        assert pipeline.healthy()

    got = {}
    for m in dead:
        h = {k: v.decode("utf-8", "replace") for k, v in m.headers()}
        got.setdefault((h["mqtt_topic"], m.value()[:200]), []).append(h["reason"])
    expected = {}
    for topic, payload, reason in cases:
        # Over mqtt.max_packet_bytes a message is refused unread: its dead letter has topic and size, no payload.
        kept = payload[:200] if len(payload) < settings.config.mqtt.max_packet_bytes else b""
        expected.setdefault((topic, kept), []).append(reason)
    assert got == expected
    values = [r[0] for r in env.query("SELECT value FROM measurements ORDER BY value")]
    assert values == [float(i) for i in range(len(cases))]
    assert env.query("SELECT count(*) FROM sensors WHERE sensor_id NOT LIKE 'good-%%'") == [(0,)]


def test_sensors_and_metrics_beyond_the_limits_are_dead_lettered_counting_those_already_stored(env):
    settings = env.migrate(env.settings(limits={"max_sensors": 3, "max_metrics_per_sensor": 2}))
    root = env.root
    with env.db() as conn:  # two sensors stored before this start; old-1 with two metrics in a recent 1h window
        conn.execute("INSERT INTO sensors (sensor_id, type) VALUES ('old-1', 'sensor'), ('old-2', 'sensor')")
        conn.execute("INSERT INTO aggregations (sensor_id, metric, avg_value, min_value, max_value, count, period, timestamp) "
                     "SELECT 'old-1', m, 1, 1, 1, 1, '1h', (now() AT TIME ZONE 'UTC') - interval '30 minutes' "
                     "FROM unnest(ARRAY['a', 'b']) AS m")
    reading = lambda metric, i: J({"metric": metric, "value": i, "timestamp": NOW - 50 + i}).encode()  # noqa: E731
    with RunningPipeline(settings, env.metrics()) as pipeline:
        pub = Publisher()
        pub.publish_all([(f"{root}/new-1", reading("temperature", 1))])  # the third sensor, first: keys order only per partition
        wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] == 1, 30, what="the first reading")
        pub.publish_all([(f"{root}/new-2", reading("temperature", 2)), (f"{root}/old-1", reading("c", 3)),
                         (f"{root}/new-1", reading("humidity", 4)), (f"{root}/new-1", reading("pressure", 5)),
                         (f"{root}/old-2", reading("temperature", 6)), (f"{root}/old-1", reading("a", 7))])
        pub.close()
        wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] == 4, 30, what="the admitted readings")
        dead = read_topic(settings.config.kafka.topics.dead_letter, expected=3, timeout=30)
        assert pipeline.healthy()
    got = sorted((dict(m.headers())["mqtt_topic"].decode().rsplit("/", 1)[1], dict(m.headers())["reason"].decode())
                 for m in dead)
    assert got == [("new-1", "too_many_metrics"), ("new-2", "too_many_sensors"), ("old-1", "too_many_metrics")]
    assert sorted(env.query("SELECT sensor_id, metric FROM measurements")) == [
        ("new-1", "humidity"), ("new-1", "temperature"), ("old-1", "a"), ("old-2", "temperature")]
