"""Hostile shapes refused with named reasons, never a processing failure: JSON nesting depth (readings and
log records), a log record's `extra` (size and depth) and the metric allow-list."""
import json

import pytest

from pipeline.records import INVALID
from pipeline.stages.decode import json_depth
from tests.unit.helpers import chain, raw, run

CH, METRICS = chain()
BIG = chain({"validation": {"max_payload_bytes": 900 * 1024}, "mqtt": {"max_packet_bytes": 1024 * 1024}})[0]  # room for 100,000 levels


def nested(depth: int, inner: bytes = b"1") -> bytes:
    """`depth` levels of {"a": ...} around `inner`, built without recursion."""
    return b'{"a":' * depth + inner + b"}" * depth


def refusal(topic, payload, ch=CH):
    out, dead = run(ch, raw(topic, payload))
    assert out == [] and len(dead) == 1, (out, [(d.reason, d.error) for d in dead])
    return dead[0]


def test_json_depth_counts_levels_without_recursion():
    assert [json_depth(x, 32) for x in (1, [], {}, [[1]], {"a": {"b": [1]}})] == [0, 1, 1, 2, 3]
    deep = []
    node = deep
    for _ in range(100_000):  # far beyond Python's recursion limit
        node.append([])
        node = node[0]
    assert json_depth(deep, 32) == 33  # stops once past the limit


@pytest.mark.parametrize("depth", [33, 300, 900, 1100, 100_000])
@pytest.mark.parametrize("shape", ["object", "array"])
def test_deep_reading_payload_is_invalid_json_too_deep(depth, shape):
    inner = nested(depth - 1) if shape == "object" else b"[" * (depth - 1) + b"1" + b"]" * (depth - 1)
    payload = b'{"metric": "t", "value": 1, "location": ' + inner + b"}"
    letter = refusal("sensors/s1", payload, BIG)
    assert (letter.reason, letter.kind, letter.stage) == ("json_too_deep", INVALID, "decode")


@pytest.mark.parametrize("depth", [33, 900, 100_000])
def test_deep_log_payload_is_invalid_json_too_deep(depth):
    payload = b'{"level": "INFO", "message": "m", "extra": ' + nested(depth - 1) + b"}"
    letter = refusal("logs/app", payload, BIG)
    assert (letter.reason, letter.kind, letter.stage) == ("json_too_deep", INVALID, "decode")


def test_depth_at_the_limit_is_decoded_and_the_limit_is_configurable():
    at_limit = b'{"metric": "t", "value": 1, "location": ' + nested(31, b'"x"') + b"}"
    letter = refusal("sensors/s1", at_limit)  # decoded, then refused further on for its location
    assert letter.reason == "location_invalid"
    small = chain({"validation": {"max_json_depth": 2}})[0]
    assert refusal("sensors/s1", b'{"metric": "t", "value": 1, "location": {"a": {"b": 1}}}', small).reason == "json_too_deep"


def test_brackets_inside_strings_do_not_count_as_depth():
    [r] = run(CH, raw("sensors/s1", {"metric": "t", "value": 1, "location": "[{" * 25}))[0]
    assert r.location == "[{" * 25


def test_too_deep_is_counted_by_stage_and_reason():
    ch, metrics = chain()
    run(ch, raw("sensors/s1", b'{"readings": ' + nested(900) + b"}"))
    assert metrics.registry.get_sample_value("pipeline_invalid_records_total",
                                             {"stage": "decode", "reason": "json_too_deep"}) == 1


def log_with_extra(extra) -> bytes:
    return b'{"level": "INFO", "message": "m", "extra": ' + (extra if isinstance(extra, bytes) else json.dumps(extra).encode()) + b"}"


def test_extra_nested_300_levels_is_refused_before_any_write():
    # 1.8 KB: passed validation before and failed the database write; now a dead letter with its own reason.
    letter = refusal("logs/app", log_with_extra(nested(299)), BIG)
    assert letter.reason == "json_too_deep"  # the message as a whole already breaks the JSON limit
    tight = chain({"validation": {"max_json_depth": 512, "max_payload_bytes": 900 * 1024}, "mqtt": {"max_packet_bytes": 1024 * 1024}})[0]
    letter = refusal("logs/app", log_with_extra(nested(299)), tight)
    assert (letter.reason, letter.stage, letter.kind) == ("log_extra_too_deep", "validate_log", INVALID)


def test_extra_depth_limit_and_its_config_key():
    ok, _ = run(CH, raw("logs/app", log_with_extra(nested(8))))  # extra itself 8 levels deep: the default limit
    assert len(ok) == 1 and ok[0].extra["a"]["a"]
    assert refusal("logs/app", log_with_extra(nested(9))).reason == "log_extra_too_deep"
    assert refusal("logs/app", log_with_extra({"a": [[1]]}), chain({"logs": {"max_extra_depth": 2}})[0]).reason \
        == "log_extra_too_deep"


def test_extra_size_is_its_encoded_size():
    fits = {"k": "x" * (8192 - 10)}  # {"k":"..."} is the string plus 8 bytes
    assert len(run(CH, raw("logs/app", log_with_extra(fits)))[0]) == 1
    letter = refusal("logs/app", log_with_extra({"k": "x" * 8192}))
    assert (letter.reason, letter.stage) == ("log_extra_too_large", "validate_log")
    small = chain({"logs": {"max_extra_bytes": 100}})[0]
    assert refusal("logs/app", log_with_extra({"k": "€" * 40}), small).reason == "log_extra_too_large"  # 120 bytes


def test_extra_reasons_are_counted():
    ch, metrics = chain()
    run(ch, raw("logs/app", log_with_extra({"k": "x" * 9000})))
    run(ch, raw("logs/app", log_with_extra(nested(10))))
    for reason in ("log_extra_too_large", "log_extra_too_deep"):
        assert metrics.registry.get_sample_value("pipeline_invalid_records_total",
                                                 {"stage": "validate_log", "reason": reason}) == 1


def test_metrics_any_by_default():
    out, dead = run(CH, raw("sensors/s1", {"readings": {"temperature": 1, "anything_else": 2}}))
    assert len(out) == 2 and dead == []


def test_metrics_list_refuses_other_names_and_keeps_the_allowed_siblings():
    ch, metrics = chain({"validation": {"metrics": ["temperature", "humidity"]}})
    out, dead = run(ch, raw("sensors/s1", {"readings": {"temperature": 1, "co2": 400}}))
    assert [r.metric for r in out] == ["temperature"]
    assert [(d.reason, d.stage, d.metric) for d in dead] == [("metric_not_allowed", "validate", "co2")]
    assert metrics.registry.get_sample_value("pipeline_invalid_records_total",
                                             {"stage": "validate", "reason": "metric_not_allowed"}) == 1


def test_metrics_configured_means_named_by_a_threshold_detection_or_unit_rule():
    tree = {"validation": {"metrics": "configured"}, "thresholds": {"co2": {"warning": {"max": 1000}}},
            "units": {}, "detection": {"metrics": {"noise": {"stuck": {"count": 10}}},
                                       "sensors": {"s9": {"metrics": {"vibration": {"stuck": {"count": 5}}}}}}}
    ch = chain(tree)[0]
    out, dead = run(ch, raw("sensors/s1", {"readings": {"co2": 1, "noise": 2, "vibration": 3, "other": 4}}))
    assert sorted(r.metric for r in out) == ["co2", "noise", "vibration"]
    assert dead[0].refused == {"other": "metric_not_allowed"}
    units = {"pressure": {"canonical": "hPa", "convert": [{"unit": "kPa", "scale": 10.0}]}}
    ch = chain({"validation": {"metrics": "configured"}, "units": units})[0]
    assert len(run(ch, raw("sensors/s1/pressure", "1000"))[0]) == 1  # a unit rule is enough
    assert run(ch, raw("sensors/s1/co2", "1000"))[1][0].reason == "metric_not_allowed"


def test_metrics_setting_is_validated():
    from pipeline.config import ConfigError, parse
    with pytest.raises(ConfigError, match="validation.metrics"):
        parse({"validation": {"metrics": "some"}}, {})
    with pytest.raises(ConfigError, match="validation.metrics"):
        parse({"validation": {"metrics": ["bad name"]}}, {})
    with pytest.raises(ConfigError, match="validation.metrics"):
        parse({"validation": {"metrics": "configured"}, "thresholds": {}, "units": {},
               "detection": {"metrics": {}}}, {})
