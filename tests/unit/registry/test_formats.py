"""The formats registry: patterns, the Kafka key from topic levels, the decoder chosen, the default selection."""
import pytest

from pipeline.config import ConfigError, parse
from pipeline.ingest.mqtt_bridge import partition_key
from pipeline.records import Invalid, RawMessage
from pipeline.registry import formats
from pipeline.registry.formats import Format, Router
from pipeline.stages import formats as builtin
from pipeline.stages.decode import Decode


def _csv(msg, levels, limits):
    return [(levels["sensor_id"], *msg.payload.decode().split(","))]


CSV = Format("csv-test", "{root}/site/{sensor_id}/csv", _csv)


def _msg(topic: str, payload: bytes = b"1") -> RawMessage:
    return RawMessage(topic, payload, 0.0)


def default_router() -> Router:
    return builtin.router(parse({}))


@pytest.mark.parametrize("topic", [b"sensors/s1", b"sensors/s1/temperature", b"logs/app", b"logs", b"",
                                   b"sensors", b"a/b/c/d/e", b"sensors//x", b"/s"])
def test_the_default_formats_key_every_topic_as_the_bridge_did(topic):
    assert default_router().key(topic) == partition_key(topic)


def test_a_format_keyed_on_the_third_level_gives_that_level_as_the_key():
    formats.register(CSV)
    router = formats.select(["csv-test", "json", "number"])
    assert router.key(b"plant/site/dev-7/csv") == b"dev-7"
    assert router.key(b"plant/dev-8") == b"dev-8"  # the others keep theirs
    assert router.key(b"plant/dev-8/temperature") == b"dev-8"
    fmt, levels = router.route(_msg("plant/site/dev-7/csv"), "plant/site/dev-7/csv".split("/"))
    assert fmt is CSV and levels == {"root": "plant", "sensor_id": "dev-7"}


def test_the_decode_stage_hands_the_message_to_the_matching_format():
    formats.register(CSV)
    stage = Decode(65536, 100, formats=formats.select(["csv-test", "json", "number"]))
    assert stage.process(_msg("plant/site/dev-7/csv", b"dev-7,temperature,21.5")) == [
        ("dev-7", "dev-7", "temperature", "21.5")]
    assert stage.process(_msg("plant/dev-8/temperature", b"3"))[0].value == 3.0


@pytest.mark.parametrize("topic,reason", [("sensors", "topic_missing_sensor_id"), ("sensors//t", "topic_missing_sensor_id"),
                                          ("a/b/c/d", "topic_too_deep"), ("logs/app/extra", "log_topic_invalid"),
                                          ("logs", "log_topic_invalid")])
def test_topics_no_default_format_takes_keep_their_dead_letter_reasons(topic, reason):
    stage = Decode(65536, 100, formats=default_router())
    with pytest.raises(Invalid) as err:
        stage.process(_msg(topic, b'{"metric": "t", "value": 1}'))
    assert err.value.reason == reason


def test_the_log_pattern_follows_the_configured_logs_root():
    router = builtin.router(parse({"logs": {"topic_root": "applog"}}))
    fmt, _ = router.route(_msg("applog/web"), ["applog", "web"])
    assert fmt.name == "log"


def test_an_unknown_format_name_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"processing.formats\[1\]: unknown format 'nope'"):
        builtin.router(parse({"processing": {"formats": ["json", "nope"]}}))


def test_a_key_level_the_pattern_does_not_capture_is_refused():
    with pytest.raises(ValueError, match="key level"):
        formats.register(Format("bad-test", "{root}/{device}", _csv))


def test_the_sensor_partition_comes_from_the_format_and_matches_the_ownership_mapping():
    from pipeline.runtime.ownership import sensor_partition
    router = default_router()
    for sensor in ("s1", "boiler-3", "ü"):
        assert router.sensor_partition(sensor, 12) == sensor_partition(sensor, 12) == formats.crc32_partition(
            router.key(f"sensors/{sensor}".encode()), 12)


def test_multi_level_and_text_captures_match_key_and_filter():
    multi = Format("multi-test", "z/{name+}/state/{metric}", _csv, key_level="name")
    mixed = Format("mixed-test", "v3/{app}@{tenant}/devices/{sensor_id}/up", _csv)
    router = Router([multi, mixed])
    fmt, levels = router.route(_msg("z/a/b c/state/power"), "z/a/b c/state/power".split("/"))
    assert fmt is multi and levels == {"name": "a/b c", "metric": "power"}
    assert router.key(b"z/a/b c/state/power") == b"a/b c"
    fmt, levels = router.route(_msg("v3/farm@ttn/devices/d1/up"), "v3/farm@ttn/devices/d1/up".split("/"))
    assert fmt is mixed and levels == {"app": "farm", "tenant": "ttn", "sensor_id": "d1"}
    assert router.key(b"v3/farm@ttn/devices/d1/up") == b"d1"
    for topic in ("z/state/power", "z/a/state", "v3/farm/devices/d1/up"):
        with pytest.raises(Invalid):
            router.route(_msg(topic), topic.split("/"))
    assert formats.mqtt_filter(multi.pattern) == "z/#" and formats.mqtt_filter(mixed.pattern) == "v3/+/devices/+/up"
    for bad in ("a/{x+}/#", "a/{x}{y}/b", "a/{x}/{x}", "a/b+c"):
        with pytest.raises(ValueError):
            formats.mqtt_filter(bad)
