"""Log records through the real stage chain: routing by topic root, the contract, every log reason."""
import pytest

from pipeline.records import LogRecord, Reading
from pipeline.runtime.batch import Batch, split_outputs
from tests.unit.helpers import NOW, chain, raw, run

CH, METRICS = chain()


def ok(topic, payload, ch=CH, **kw):
    out, dead = run(ch, raw(topic, payload, **kw))
    assert dead == [], [(d.reason, d.error) for d in dead]
    return out


def reason(topic, payload, ch=CH):
    out, dead = run(ch, raw(topic, payload))
    assert out == [] and len(dead) == 1, (out, dead)
    return dead[0].reason


def test_log_record_fields():
    [r] = ok("logs/billing", {"timestamp": "2025-10-09T08:50:00Z", "level": "ERROR", "message": "db down\nretrying",
                              "logger": "billing.db", "extra": {"order": 42, "tags": ["a"]}})
    assert isinstance(r, LogRecord)
    assert (r.app, r.level, r.message, r.logger, r.extra, r.ts) == (
        "billing", "ERROR", "db down\nretrying", "billing.db", {"order": 42, "tags": ["a"]}, NOW - 200)
    assert r.source.mqtt_topic == "logs/billing" and r.received_at == NOW


def test_the_producers_record_id_is_kept():
    [r] = ok("logs/a", {"level": "INFO", "message": "m", "id": "3f2a9c:17"})
    assert r.record_id == "3f2a9c:17"
    assert ok("logs/a", {"level": "INFO", "message": "m"})[0].record_id is None


def test_level_any_case_and_python_aliases_stored_upper_case():
    levels = [ok("logs/a", {"level": lv, "message": "m"})[0].level for lv in ("debug", "Info", "warn", "WARNING", "error",
                                                                               "fatal", "critical")]
    assert levels == ["DEBUG", "INFO", "WARNING", "WARNING", "ERROR", "CRITICAL", "CRITICAL"]


def test_optional_fields_default():
    [r] = ok("logs/a", {"level": "INFO", "message": ""}, received_at=NOW - 3)
    assert (r.logger, r.extra, r.ts) == (None, {}, NOW - 3)
    [r] = ok("logs/a", {"level": "INFO", "message": "m", "logger": None, "extra": None, "timestamp": NOW - 1})
    assert (r.logger, r.extra, r.ts) == (None, {}, NOW - 1)


def test_message_cap_counts_utf8_bytes():
    ok("logs/a", {"level": "INFO", "message": "x" * 8192})
    assert reason("logs/a", {"level": "INFO", "message": "x" * 8193}) == "log_message_too_long"
    assert reason("logs/a", {"level": "INFO", "message": "€" * 2731}) == "log_message_too_long"  # 8193 bytes
    small = chain({"logs": {"max_message_bytes": 100}})[0]
    assert reason("logs/a", {"level": "INFO", "message": "x" * 101}, small) == "log_message_too_long"


@pytest.mark.parametrize("topic, payload, expected", [
    ("logs", {"level": "INFO", "message": "m"}, "log_topic_invalid"),
    ("logs/", {"level": "INFO", "message": "m"}, "log_topic_invalid"),
    ("logs/a/b", {"level": "INFO", "message": "m"}, "log_topic_invalid"),
    ("logs/bad app", {"level": "INFO", "message": "m"}, "log_app_invalid"),
    ("logs/é", {"level": "INFO", "message": "m"}, "log_app_invalid"),
    ("logs/" + "a" * 47, {"level": "INFO", "message": "m"}, "log_app_too_long"),
    ("logs/a", b"", "payload_empty"),
    ("logs/a", b"{oops", "invalid_json"),
    ("logs/a", b'{"level": "INFO", "level": "ERROR", "message": "m"}', "duplicate_key"),
    ("logs/a", b"[1]", "not_an_object"),
    ("logs/a", {"level": "INFO", "message": "m", "severity": 3}, "log_unknown_field"),
    ("logs/a", {"message": "m"}, "log_missing_field"),
    ("logs/a", {"level": "INFO"}, "log_missing_field"),
    ("logs/a", {"level": "verbose", "message": "m"}, "log_level_invalid"),
    ("logs/a", {"level": 40, "message": "m"}, "log_level_invalid"),
    ("logs/a", {"level": None, "message": "m"}, "log_level_invalid"),
    ("logs/a", {"level": "INFO", "message": 5}, "log_message_invalid"),
    ("logs/a", {"level": "INFO", "message": "a\x00b"}, "log_message_invalid"),
    ("logs/a", {"level": "INFO", "message": "m", "logger": 5}, "log_logger_invalid"),
    ("logs/a", {"level": "INFO", "message": "m", "logger": "x" * 201}, "log_logger_invalid"),
    ("logs/a", {"level": "INFO", "message": "m", "logger": "a\nb"}, "log_logger_invalid"),
    ("logs/a", {"level": "INFO", "message": "m", "extra": [1]}, "log_extra_invalid"),
    ("logs/a", {"level": "INFO", "message": "m", "extra": "k=v"}, "log_extra_invalid"),
    ("logs/a", {"level": "INFO", "message": "m", "extra": {"k": ["a\x00"]}}, "log_extra_invalid"),
    ("logs/a", {"level": "INFO", "message": "m", "extra": {"k\x00": 1}}, "log_extra_invalid"),
    ("logs/a", {"level": "INFO", "message": "m", "id": 7}, "log_id_invalid"),
    ("logs/a", {"level": "INFO", "message": "m", "id": ""}, "log_id_invalid"),
    ("logs/a", {"level": "INFO", "message": "m", "id": "x" * 101}, "log_id_invalid"),
    ("logs/a", {"level": "INFO", "message": "m", "id": "a\nb"}, "log_id_invalid"),
    ("logs/a", {"level": "INFO", "message": "m", "timestamp": "yesterday"}, "timestamp_invalid"),
    ("logs/a", {"level": "INFO", "message": "m", "timestamp": NOW + 3600}, "timestamp_in_future"),
    ("logs/a", {"level": "INFO", "message": "m", "timestamp": NOW - 40 * 86400}, "timestamp_too_old"),
])
def test_each_log_reason(topic, payload, expected):
    assert reason(topic, payload) == expected


def test_oversized_log_payload_uses_original_size():
    msg = raw("logs/a", b"{}")
    msg.original_size = 2_000_000
    _, [d] = run(CH, msg)
    assert d.reason == "payload_too_large" and d.stage == "decode"


def test_log_dead_letter_names_its_stage():
    _, [d] = run(CH, raw("logs/a", {"level": "loud", "message": "m"}, offset=7))
    headers = dict(d.headers())
    assert headers["reason"] == b"log_level_invalid" and headers["stage"] == b"validate_log"
    assert headers["mqtt_topic"] == b"logs/a" and headers["source_offset"] == b"7"


def test_routing_leaves_readings_alone_and_counts_only_processed_records():
    ch, metrics = chain()
    out, dead = [], []
    ch.run(raw("sensors/d", {"metric": "temperature", "value": 20}), out, dead)
    ch.run(raw("logs/a", {"level": "INFO", "message": "m"}), out, dead)
    ch.flush_counts()
    assert dead == [] and [type(o) for o in out] == [Reading, LogRecord]
    sample = metrics.registry.get_sample_value
    assert sample("pipeline_stage_records_out_total", {"stage": "validate"}) == 1
    assert sample("pipeline_stage_records_out_total", {"stage": "transform"}) == 1
    assert sample("pipeline_stage_records_out_total", {"stage": "validate_log"}) == 1
    assert sample("pipeline_stage_records_out_total", {"stage": "decode"}) == 2


def test_log_records_have_no_windows_so_they_are_never_late():
    ch = chain()[0]
    ok("sensors/d", {"metric": "temperature", "value": 20}, ch)  # moves the partition's watermark to NOW
    [r] = ok("logs/a", {"level": "INFO", "message": "buffered for hours", "timestamp": NOW - 7200}, ch)
    assert isinstance(r, LogRecord)
    assert reason("sensors/d", {"metric": "temperature", "value": 20, "timestamp": NOW - 7200}, ch) == "late"


def test_logs_topic_root_is_configurable():
    ch = chain({"logs": {"topic_root": "applogs"}})[0]
    [r] = ok("applogs/a", {"level": "INFO", "message": "m"}, ch)
    assert isinstance(r, LogRecord)
    # Under another root the same payload is read as readings, and refused as such.
    assert reason("logs/a", {"level": "INFO", "message": "m"}, ch) == "unknown_field"


def test_split_outputs_and_batch_logs():
    out = ok("sensors/d", {"readings": {"t": 1, "h": 2}}) + ok("logs/a", {"level": "INFO", "message": "m"})
    readings, logs = split_outputs(out)
    assert [r.metric for r in readings] == ["t", "h"] and [r.app for r in logs] == ["a"]
    b = Batch(readings, [], {}, 1, logs=logs)
    assert b.logs == logs and Batch([], [], {}, 1).logs == []
