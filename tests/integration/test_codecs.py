"""Binary and Telegraf payloads through the real pipeline, Mosquitto, Kafka, PostgreSQL: CBOR and MessagePack
readings on <root>/<sensor_id> stored without configuration, a hostile binary corpus interleaved with valid
neighbours (every neighbour stored, every hostile message dead-lettered with its reason), and Telegraf's line
protocol on <telegraf root>/<host>/<plugin> stored with the host as sensor id, <measurement>_<field> metrics and
the points' nanosecond timestamps."""
from __future__ import annotations

import json
import time

import cbor2
import msgpack
import pytest

from tests.integration.clients import Publisher, RunningPipeline, read_topic, wait_for

# Hostile payloads (sensor id, payload, expected reason), each under the 64 KB payload limit.
HOSTILE = [
    ("bad-cbor-truncated", b"\xa1\x68readings\xa1\x61t\xfb\x40\x35", "cbor_invalid"),
    ("bad-cbor-huge-length", b"\xa1\x68readings\xa1\x61t\x5b\xff\xff\xff\xff\xff\xff\xff\xff", "cbor_invalid"),
    ("bad-cbor-huge-map", b"\xbb\x00\x00\x00\x01\x00\x00\x00\x00", "cbor_invalid"),
    ("bad-cbor-deep", b"\xa1\x68readings" + b"\x81" * 60_000 + b"\x01", "cbor_too_deep"),
    ("bad-cbor-bytes", cbor2.dumps({"metric": "temperature", "value": b"\x01\x02"}), "cbor_unsupported_type"),
    ("bad-cbor-utf8", b"\xa1\x66metric\x62\xff\xfe", "invalid_utf8"),
    ("bad-mp-truncated", b"\x82\xa6metric\xa1t", "msgpack_invalid"),
    ("bad-mp-huge-array", b"\x81\xa8readings\xdd\xff\xff\xff\xff", "msgpack_invalid"),
    ("bad-mp-deep", b"\x81\xa8readings" + b"\x91" * 60_000 + b"\x01", "msgpack_too_deep"),
    ("bad-mp-ext", msgpack.packb({"metric": "t", "value": msgpack.ExtType(7, b"x")}), "msgpack_unsupported_type"),
    ("bad-mp-many", msgpack.packb({"readings": {f"m{i}": i for i in range(2_000)}}), "too_many_readings"),
]


def test_cbor_and_msgpack_readings_stored_and_a_hostile_corpus_dead_lettered(env):
    settings = env.migrate()
    root, t0 = env.root, round(time.time()) - 30
    valid = {  # sensor id -> payload; each stores two readings
        "cbor-1": cbor2.dumps({"timestamp": t0, "readings": {"temperature": 21.5, "humidity": 40}}),
        "mp-1": msgpack.packb({"timestamp": t0, "readings": {"temperature": 22.5, "humidity": 41}}),
        "json-1": json.dumps({"timestamp": t0, "readings": {"temperature": 23.5, "humidity": 42}}).encode(),
        "cbor-2": cbor2.dumps({"timestamp": cbor2.CBORTag(1, t0), "type": "bme280",
                               "readings": {"temperature": 24.5, "pressure": 1012.5}}),
        "mp-2": msgpack.packb({"timestamp": msgpack.Timestamp(t0, 0), "readings": {"temperature": 25.5,
                                                                                   "pressure": 1013.5}}),
    }
    items, good = [], iter(valid.items())
    for sid, payload, _ in HOSTILE:  # each hostile message between two valid neighbours
        neighbour = next(good, None)
        if neighbour:
            items.append((f"{root}/{neighbour[0]}", neighbour[1]))
        items.append((f"{root}/{sid}", payload))
    items += [(f"{root}/{sid}", p) for sid, p in good]
    with RunningPipeline(settings, env.metrics()):
        pub = Publisher()
        pub.publish_all(items)
        pub.close()
        wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] == 2 * len(valid),
                 what=f"{2 * len(valid)} measurement rows")
        dead = read_topic(settings.config.kafka.topics.dead_letter, expected=len(HOSTILE))
    rows = env.query("SELECT sensor_id, metric, value, EXTRACT(EPOCH FROM timestamp)::float FROM measurements "
                     "ORDER BY sensor_id, metric")
    assert rows == sorted([(s, m, v, float(t0)) for s, p in valid.items()
                           for m, v in _readings(p).items()])
    reasons = {dict(m.headers())["mqtt_topic"].decode().removeprefix(f"{root}/"): dict(m.headers())["reason"].decode()
               for m in dead}
    assert reasons == {sid: reason for sid, _, reason in HOSTILE}
    assert env.query("SELECT type FROM sensors WHERE sensor_id = 'cbor-2'") == [("bme280",)]


def _readings(payload: bytes) -> dict:
    if payload[:1] == b"{":
        return json.loads(payload)["readings"]
    if 0xa0 <= payload[0] <= 0xbf:
        return cbor2.loads(payload)["readings"]
    return msgpack.unpackb(payload, timestamp=3)["readings"]


@pytest.mark.long
def test_telegraf_line_protocol_stored_by_host_with_measurement_field_metrics_and_ns_timestamps(env):
    tg_root = f"{env.root}tg"
    settings = env.migrate(env.settings(
        mqtt={"topics": [f"{env.root}/#", f"{tg_root}/#"]},
        processing={"formats": ["log", "telegraf", "json", "number"], "telegraf_topic_root": tg_root}))
    ns = (round(time.time()) - 60) * 10**9 + 123_456_000  # µs are what the store keeps
    cpu = (f"cpu,cpu=cpu-total,host=web-1 usage_idle=97.5,usage_user=2.25 {ns}\n"
           f"# a comment line\n"
           f"system,host=web-1 load1=0.5,n_users=3i,uptime_format=\"1 day,  2:03\",online=true {ns + 10**9}\n")
    metrics = env.metrics()
    with RunningPipeline(settings, metrics):
        pub = Publisher()
        pub.publish_all([(f"{tg_root}/web-1/cpu", cpu),
                         (f"{tg_root}/db-2/mem", f"mem,host=db-2 used_percent=41.5 {ns}"),
                         (f"{tg_root}/db-2/disk", "disk,host=db-2 used=oops"),
                         (f"{env.root}/json-1", json.dumps({"metric": "temperature", "value": 20.5}))])
        pub.close()
        wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] == 7, what="7 measurement rows")
        dead = read_topic(settings.config.kafka.topics.dead_letter, expected=1)
        raw = read_topic(settings.config.kafka.topics.raw, expected=4)
        wait_for(lambda: metrics.registry.get_sample_value("pipeline_format_values_skipped_total",
                                                             {"format": "telegraf"}) == 1,
                 what="the text field counted as skipped")
    rows = env.query("SELECT sensor_id, metric, value, EXTRACT(EPOCH FROM timestamp)::numeric FROM measurements "
                     "WHERE sensor_id <> 'json-1' ORDER BY sensor_id, metric")
    t, t1 = ns / 1e9, ns / 1e9 + 1
    assert [(s, m, v, float(ts)) for s, m, v, ts in rows] == [
        ("db-2", "mem_used_percent", 41.5, t),
        ("web-1", "cpu_usage_idle", 97.5, t), ("web-1", "cpu_usage_user", 2.25, t),
        ("web-1", "system_load1", 0.5, t1), ("web-1", "system_n_users", 3.0, t1), ("web-1", "system_online", 1.0, t1)]
    assert env.query("SELECT metric, value FROM measurements WHERE sensor_id = 'json-1'") == [("temperature", 20.5)]
    [letter] = dead
    headers = dict(letter.headers())
    assert headers["reason"] == b"line_protocol_invalid" and headers["mqtt_topic"] == f"{tg_root}/db-2/disk".encode()
    assert {dict(m.headers())["mqtt_topic"].decode(): m.key() for m in raw} == {
        f"{tg_root}/web-1/cpu": b"web-1", f"{tg_root}/db-2/mem": b"db-2", f"{tg_root}/db-2/disk": b"db-2",
        f"{env.root}/json-1": b"json-1"}
