"""Validation reasons, payload formats and transformation, through the real stage chain."""
import json
import math

import pytest

from tests.unit.helpers import NOW, chain, raw, run

CH, METRICS = chain()


def ok(topic, payload, ch=CH, **kw):
    out, dead = run(ch, raw(topic, payload, **kw))
    assert dead == [], [d.reason for d in dead]
    return out


def reason(topic, payload, ch=CH):
    out, dead = run(ch, raw(topic, payload))
    assert out == [] and len(dead) == 1, (out, dead)
    return dead[0].reason


def test_readings_object_gives_one_flat_record_per_metric():
    out = ok("sensors/dev-1", {"type": "environment", "location": "hall-3", "timestamp": "2025-10-09T08:50:00Z",
                               "readings": {"temperature": 21.4, "humidity": 40, "pressure": 1012.8}})
    assert [(r.sensor_id, r.sensor_type, r.location, r.metric, r.value) for r in out] == [
        ("dev-1", "environment", "hall-3", "temperature", 21.4),
        ("dev-1", "environment", "hall-3", "humidity", 40.0),
        ("dev-1", "environment", "hall-3", "pressure", 1012.8)]
    assert all(r.ts == NOW - 200 for r in out)
    assert out[0].source.topic == "raw" and out[0].source.offset == 0


def test_single_reading_form_and_epoch_timestamp():
    [r] = ok("sensors/dev-2", {"metric": "temperature", "value": -3, "timestamp": NOW - 5})
    assert (r.metric, r.value, r.ts, r.sensor_type, r.location) == ("temperature", -3.0, NOW - 5, "sensor", None)


def test_bare_number_on_per_metric_topic_uses_receive_time():
    [r] = ok("sensors/dev-3/pressure", b" 1013.25\n", received_at=NOW - 1)
    assert (r.sensor_id, r.metric, r.value, r.ts, r.received_at) == ("dev-3", "pressure", 1013.25, NOW - 1, NOW - 1)


def test_naive_and_offset_iso_timestamps_are_utc():
    [a] = ok("sensors/d", {"metric": "m", "value": 1, "timestamp": "2025-10-09T08:53:00"})
    [b] = ok("sensors/d", {"metric": "m", "value": 1, "timestamp": "2025-10-09T10:53:00+02:00"})
    assert a.ts == b.ts == NOW - 20


UNITS = {"units": {"temperature": {"canonical": "C", "convert": [
    {"unit": "F", "scale": 5 / 9, "offset": -160 / 9}, {"unit": "K", "offset": -273.15}]}}}


def test_unit_normalisation():
    ch = chain(UNITS)[0]
    [f] = ok("sensors/d", {"metric": "temperature", "value": 212, "unit": "F"}, ch)
    assert math.isclose(f.value, 100.0) and f.unit == "C"
    [k] = ok("sensors/d", {"metric": "temperature", "value": 273.15, "unit": "K"}, ch)
    assert math.isclose(k.value, 0.0, abs_tol=1e-9)
    [c] = ok("sensors/d", {"metric": "temperature", "value": 20, "unit": "C"}, ch)
    assert c.value == 20
    [x] = ok("sensors/d", {"metric": "lux", "value": 300, "unit": "lx"}, ch)  # no rule: kept as sent
    assert x.value == 300
    assert reason("sensors/d", {"metric": "temperature", "value": 1, "unit": "Rankine"}, ch) == "unknown_unit"


@pytest.mark.parametrize("topic, payload, expected", [
    ("sensors/d", b"", "payload_empty"),
    ("sensors/d", b"   ", "payload_empty"),
    ("sensors/d", b"{not json", "invalid_json"),
    ("sensors/d", b"\xff\xfe{}", "invalid_utf8"),
    ("sensors/d", b"[1, 2]", "not_an_object"),
    ("sensors/d", b'"text"', "not_an_object"),
    ("sensors/d", {"metric": "t", "value": 1, "colour": "red"}, "unknown_field"),
    ("sensors/d", {"metric": "t"}, "missing_field"),
    ("sensors/d", {"readings": {}}, "missing_field"),
    ("sensors/d", {"readings": [1, 2]}, "readings_not_object"),
    ("sensors/d", {"readings": {"a": 1}, "metric": "a", "value": 1}, "ambiguous_reading"),
    ("sensors/d", {"readings": {f"m{i}": i for i in range(101)}}, "too_many_readings"),
    ("sensors/d", b'{"metric": "t", "value": 1, "value": 2}', "duplicate_key"),
    ("sensors/d", b'{"metric": "t", "value": 1e309}', "value_not_finite"),
    ("sensors/d", b'{"metric": "t", "value": NaN}', "invalid_json"),
    ("sensors/d", {"metric": "t", "value": "21.5"}, "value_not_number"),
    ("sensors/d", {"metric": "t", "value": True}, "value_not_number"),
    ("sensors/d", {"metric": "t", "value": None}, "value_not_number"),
    ("sensors/d", {"metric": "t", "value": {"v": 1}}, "value_not_number"),
    ("sensors/d", {"metric": "", "value": 1}, "metric_invalid"),
    ("sensors/d", {"metric": "x" * 21, "value": 1}, "metric_too_long"),
    ("sensors/d", {"metric": "air temp", "value": 1}, "metric_invalid"),
    ("sensors/d", {"metric": 5, "value": 1}, "metric_invalid"),
    ("sensors/" + "s" * 51, {"metric": "t", "value": 1}, "sensor_id_too_long"),
    ("sensors/bad'id", {"metric": "t", "value": 1}, "sensor_id_invalid"),
    ("sensors/dé", {"metric": "t", "value": 1}, "sensor_id_invalid"),
    ("sensors/", {"metric": "t", "value": 1}, "topic_missing_sensor_id"),
    ("sensors", {"metric": "t", "value": 1}, "topic_missing_sensor_id"),
    ("sensors/d/t/extra", b"1", "topic_too_deep"),
    ("sensors/d/t", b"nan", "value_not_number"),
    ("sensors/d/t", b"warm", "value_not_number"),
    ("sensors/d", {"metric": "t", "value": 1, "timestamp": "yesterday"}, "timestamp_invalid"),
    ("sensors/d", {"metric": "t", "value": 1, "timestamp": "2025-10-09"}, "timestamp_invalid"),
    ("sensors/d", {"metric": "t", "value": 1, "timestamp": -1}, "timestamp_invalid"),
    ("sensors/d", {"metric": "t", "value": 1, "timestamp": [2025]}, "timestamp_invalid"),
    ("sensors/d", {"metric": "t", "value": 1, "timestamp": NOW + 3600}, "timestamp_in_future"),
    ("sensors/d", {"metric": "t", "value": 1, "timestamp": "1969-12-31T23:59:59Z"}, "timestamp_too_old"),
    ("sensors/d", {"metric": "t", "value": 1, "type": "x" * 21}, "type_too_long"),
    ("sensors/d", {"metric": "t", "value": 1, "type": "a b"}, "type_invalid"),
    ("sensors/d", {"metric": "t", "value": 1, "location": "x" * 101}, "location_too_long"),
    ("sensors/d", {"metric": "t", "value": 1, "location": "hall\x00"}, "location_invalid"),
    ("sensors/d", {"metric": "t", "value": 1, "location": 3}, "location_invalid"),
])
def test_each_validation_reason(topic, payload, expected):
    assert reason(topic, payload) == expected


def test_oversized_payload_reason_uses_original_size():
    msg = raw("sensors/d", b"{}")
    msg.original_size = 2_000_000
    out, dead = run(CH, msg)
    assert dead[0].reason == "payload_too_large" and "2000000" in dead[0].error


def test_string_value_containing_key_pattern_is_not_a_duplicate():
    [r] = ok("sensors/d-quoted", b'{"metric": "t", "value": 1, "location": "a\\":b"}')  # its first reading: its labels
    assert r.location == 'a":b'


def test_one_bad_reading_does_not_drop_its_siblings():
    out, dead = run(CH, raw("sensors/d", {"readings": {"temperature": 20, "humidity": "wet"}}))
    assert [r.metric for r in out] == ["temperature"]
    assert [(d.reason, d.stage, d.metric) for d in dead] == [("value_not_number", "validate", "humidity")]
    headers = dict(dead[0].headers())
    assert headers["metrics"] == b"humidity" and json.loads(headers["reasons"]) == {"humidity": "value_not_number"}


def test_a_message_with_many_bad_readings_is_one_dead_letter_listing_them_all():
    readings = {f"m{i}": "wet" for i in range(100)}
    out, dead = run(CH, raw("sensors/d", {"readings": readings}))
    assert out == [] and len(dead) == 1
    headers = dict(dead[0].headers())
    assert headers["metrics"].decode().split(",") == list(readings)
    assert json.loads(headers["reasons"]) == {m: "value_not_number" for m in readings}
    assert headers["reason"] == b"value_not_number" and "metric" not in headers and headers["error"].startswith(b"100 records")


def test_bad_readings_of_different_reasons_share_one_letter_under_the_most_common_reason_and_siblings_are_kept():
    readings = {"temperature": 20, "a": "wet", "b": True, "c": 1, "air temp": 3, "humidity": 40}
    out, dead = run(CH, raw("sensors/d", {"readings": readings}))
    assert [r.metric for r in out] == ["temperature", "c", "humidity"]
    [d] = dead
    assert (d.reason, d.stage, d.kind) == ("value_not_number", "validate", "invalid")
    assert d.refused == {"a": "value_not_number", "b": "value_not_number", "air temp": "metric_invalid"}
    before = METRICS.registry.get_sample_value("pipeline_invalid_records_total", {"stage": "validate", "reason": "metric_invalid"}) or 0
    run(CH, raw("sensors/d", {"readings": readings}))  # counted per refused reading, not per letter
    assert METRICS.registry.get_sample_value("pipeline_invalid_records_total", {"stage": "validate", "reason": "metric_invalid"}) == before + 1


def test_dead_letter_carries_stage_reason_and_source_position():
    _, [d] = run(CH, raw("sensors/d", b"{oops", offset=41))
    headers = dict(d.headers())
    assert headers["reason"] == b"invalid_json" and headers["stage"] == b"decode"
    assert headers["source_offset"] == b"41" and headers["mqtt_topic"] == b"sensors/d"
    assert d.source.payload == b"{oops"


def test_invalid_counted_by_stage_and_reason():
    before = METRICS.registry.get_sample_value("pipeline_invalid_records_total", {"stage": "decode", "reason": "payload_empty"}) or 0
    run(CH, raw("sensors/d", b""))
    after = METRICS.registry.get_sample_value("pipeline_invalid_records_total", {"stage": "decode", "reason": "payload_empty"})
    assert after == before + 1
