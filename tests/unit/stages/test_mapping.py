"""The mapping engine (config `sources:`): paths, wildcards, names, timestamps, units, booleans and text, renames,
include/exclude, ignore topics, {name+}, refusals naming the mapping, the Kafka key from the topic only.

Payloads are shaped as each project's documentation shows them (source noted per test)."""
import time

import orjson
import pytest

from pipeline.config import ConfigError, parse
from pipeline.records import Invalid, RawMessage
from pipeline.registry.formats import Limits
from pipeline.stages.decode import Decode
from pipeline.stages.formats import router
from pipeline.stages.mapping import Mapping, source_filters, with_source_topics
from pipeline.stages.mapping_stats import MappingStats
from pipeline.stages.transform import NormalizeUnits
from pipeline.stages.validate import Validate

NOW = 1_796_634_000.0  # 2026-12-07T09:00:00Z


def decoder(*sources, stats=None, max_readings=100, **extra):
    cfg = parse({"sources": list(sources), **extra})
    return Decode(65536, max_readings, formats=router(cfg, stats)), cfg


def run(dec, topic, payload):
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return dec.process(RawMessage(topic, body, NOW))


def rows(cands):
    return [(c.sensor_id, c.metric, c.value, c.unit) for c in cands]


TASMOTA = {"name": "tasmota", "topic": "tele/{sensor_id}/SENSOR", "readings": ["*.Temperature", "*.Humidity"],
           "timestamp": {"path": "Time", "assume_zone": "Europe/Berlin"},
           "unit": {"path": "TempUnit", "metrics": ["*temperature"]}, "ignore": ["tele/+/LWT"]}


def test_tasmota_sensor_message_gives_named_readings_with_the_sibling_unit_and_a_local_time():
    # Tasmota docs (Commands, TelePeriod): tele/<topic>/SENSOR = {"Time":"2019-12-16T21:37:20","BME280":{...},"TempUnit":"C"}
    dec, _ = decoder(TASMOTA)
    out = run(dec, "tele/plug-1/SENSOR", {"Time": "2026-12-07T10:00:00", "BME280": {"Temperature": 21.5,
              "Humidity": 40.1, "Pressure": 1012.0}, "TempUnit": "C", "PressureUnit": "hPa"})
    assert rows(out) == [("plug-1", "bme280_temperature", 21.5, "C"), ("plug-1", "bme280_humidity", 40.1, None)]
    assert out[0].timestamp == NOW  # 10:00 in Berlin (winter, UTC+1) is 09:00 UTC


def test_paths_with_a_literal_prefix_and_a_wildcard_name_by_what_the_wildcard_matched():
    # The Things Stack v3 uplink message (docs: "Data Formats"): readings under uplink_message.decoded_payload
    ttn = {"name": "ttn", "topic": "v3/{application}@{tenant}/devices/{sensor_id}/up",
           "readings": ["uplink_message.decoded_payload.*"], "location": "{application}",
           "timestamp": {"path": "received_at"}}
    dec, _ = decoder(ttn)
    out = run(dec, "v3/farm@ttn/devices/eui-70b3/up", {"end_device_ids": {"device_id": "eui-70b3"},
              "received_at": "2026-12-07T09:00:00.000000123Z",
              "uplink_message": {"f_port": 1, "decoded_payload": {"temperature": 3.5, "battery_V": 3.61}}})
    assert rows(out) == [("eui-70b3", "temperature", 3.5, None), ("eui-70b3", "battery_v", 3.61, None)]
    assert out[0].location == "farm" and out[0].timestamp == pytest.approx(NOW)


def test_deep_wildcard_finds_a_key_at_any_depth_and_an_object_gives_its_numbers():
    dec, _ = decoder({"name": "deep", "topic": "d/{sensor_id}", "readings": ["**.temp", "power"]})
    out = run(dec, "d/x", {"a": {"b": {"temp": 1}}, "c": {"temp": 2}, "power": {"l1": 3, "l2": {"w": 4}}})
    assert sorted(rows(out)) == sorted([("x", "a_b_temp", 1, None), ("x", "c_temp", 2, None),
                                        ("x", "power_l1", 3, None), ("x", "power_l2_w", 4, None)])


def test_zigbee2mqtt_friendly_names_with_slashes_booleans_text_and_housekeeping():
    # Zigbee2MQTT docs (MQTT topics and messages): zigbee2mqtt/<FRIENDLY_NAME> = {"temperature":..,"linkquality":..}
    stats = MappingStats()
    z2m = {"name": "z2m", "topic": "zigbee2mqtt/{sensor_id+}", "exclude": ["linkquality"],
           "ignore": ["zigbee2mqtt/bridge/#", "zigbee2mqtt/{name+}/availability"]}
    dec, cfg = decoder(z2m, stats=stats)
    out = run(dec, "zigbee2mqtt/Living Room/Plug 2", {"state": "ON", "power": 12.5, "linkquality": 87,
              "child_lock": True, "update": {"state": "idle"}, "ContactSensor": False})
    assert rows(out) == [("Living_Room_Plug_2", "power", 12.5, None), ("Living_Room_Plug_2", "child_lock", 1, None),
                         ("Living_Room_Plug_2", "contact_sensor", 0, None)]
    assert run(dec, "zigbee2mqtt/bridge/state", b'{"state":"online"}') == []
    assert run(dec, "zigbee2mqtt/Living Room/Plug 2/availability", b"") == []  # an empty retained clear too
    snap = stats.snapshot()[0]
    assert (snap["messages"], snap["readings"], snap["text_skipped"], snap["ignored"]) == (1, 3, 2, 2)
    # The Kafka key: the whole friendly name, from the topic only (never the payload)
    r = router(cfg)
    assert r.key(b"zigbee2mqtt/Living Room/Plug 2") == b"Living Room/Plug 2"
    assert r.key(b"zigbee2mqtt/Living Room/Plug 2/availability") == b"Living Room/Plug 2"
    assert source_filters(cfg.sources) == ["zigbee2mqtt/#"]


def test_text_values_turn_named_words_into_numbers():
    dec, _ = decoder({"name": "z", "topic": "z/{sensor_id}", "text_values": {"ON": 1, "OFF": 0}})
    assert rows(run(dec, "z/a", {"state": "OFF", "mode": "auto"})) == [("a", "state", 0, None)]


def test_only_text_is_not_a_refusal_but_no_reading_path_at_all_is():
    stats = MappingStats()
    dec, _ = decoder({"name": "t", "topic": "t/{sensor_id}", "readings": ["values.*"]}, stats=stats)
    assert run(dec, "t/a", {"values": {"mode": "auto"}}) == []
    with pytest.raises(Invalid) as err:
        run(dec, "t/a", {"other": 1})
    assert err.value.reason == "no_readings" and "mapping t:" in str(err.value)
    last = stats.snapshot()[0]["last_refused"]
    assert last["reason"] == "no_readings" and last["topic"] == "t/a" and '"other"' in last["payload"]


@pytest.mark.parametrize("fmt,raw,expected", [
    ("epoch_s", 1_796_634_000, NOW), ("epoch_ms", 1_796_634_000_123, NOW + 0.123),
    ("epoch_us", 1_796_634_000_000_500, NOW + 0.0005), ("epoch_ns", "1796634000000000001", NOW),
    ("iso", "2026-12-07T09:00:00Z", NOW), ("iso", "2026-12-07T04:00:00-05:00", NOW),
    ("iso", "2026-12-07 09:00:00", NOW),
])
def test_timestamps_in_every_format(fmt, raw, expected):
    dec, _ = decoder({"name": "ts", "topic": "ts/{sensor_id}", "readings": ["v"],
                      "timestamp": {"path": "meta.t", "format": fmt}})
    assert run(dec, "ts/a", {"v": 1, "meta": {"t": raw}})[0].timestamp == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("raw,reason", [(None, "timestamp_missing"), ("yesterday", "timestamp_invalid"),
                                        (True, "timestamp_invalid")])
def test_a_bad_timestamp_is_refused_with_its_reason_and_the_mapping_name(raw, reason):
    dec, _ = decoder({"name": "ts", "topic": "ts/{sensor_id}", "readings": ["v"], "timestamp": {"path": "t"}})
    payload = {"v": 1} if raw is None else {"v": 1, "t": raw}
    with pytest.raises(Invalid) as err:
        run(dec, "ts/a", payload)
    assert err.value.reason == reason and err.value.detail.startswith("mapping ts:")


def test_renames_include_and_units_by_glob_and_constant():
    dec, _ = decoder({"name": "r", "topic": "r/{sensor_id}", "include": ["temp*", "hum*"],
                      "rename": {"temperature_c": "temperature"},
                      "unit": [{"value": "C", "metrics": ["temp*"]}, {"value": "%", "metrics": ["hum*"]}]})
    out = run(dec, "r/a", {"TemperatureC": 20.0, "Humidity": 50, "Voltage": 3.3})
    assert rows(out) == [("a", "temperature", 20.0, "C"), ("a", "humidity", 50, "%")]


def test_metric_templates_take_record_fields_and_ids_come_from_the_payload():
    # Telegraf JSON serializer (docs: serializers/json): {"metrics":[{"fields":{..},"name":"cpu","tags":{..},"timestamp":..}]}
    tj = {"name": "tj", "topic": "telegraf/{host}/{plugin}", "records": "metrics", "readings": ["fields.*"],
          "metric": "{.name}_{key}", "sensor_id": {"path": "tags.host"}, "type": "{plugin}",
          "timestamp": {"path": "timestamp", "format": "epoch_s"}}
    dec, cfg = decoder(tj)
    payload = {"metrics": [{"fields": {"usage_idle": 98.5}, "name": "cpu", "tags": {"host": "web 1"}, "timestamp": NOW},
                           {"fields": {"used_percent": 40}, "name": "mem", "tags": {"host": "web 1"}, "timestamp": NOW}]}
    out = run(dec, "telegraf/web1/cpu", payload)
    assert rows(out) == [("web_1", "cpu_usage_idle", 98.5, None), ("web_1", "mem_used_percent", 40, None)]
    assert out[0].sensor_type == "cpu"
    assert router(cfg).key(b"telegraf/web1/cpu") == b"web1"  # keyed by the topic's first capture
    with pytest.raises(Invalid) as err:
        run(dec, "telegraf/web1/cpu", {"metrics": {"not": "a list"}})
    assert err.value.reason == "records_not_list"


def test_the_naming_rule_is_records_metric_name_and_sensor_name():
    dec, _ = decoder({"name": "n", "topic": "n/{sensor_id+}"})
    out = run(dec, "n/Hall:Way/Plug #3", {"ActivePower": 1, "PM2.5": 2, "2nd": 3})
    assert [(c.sensor_id, c.metric) for c in out] == [("Hall:Way_Plug_3", "active_power"), ("Hall:Way_Plug_3", "pm2_5"),
                                                      ("Hall:Way_Plug_3", "m_2nd")]


def test_hostile_payloads_are_bounded():
    dec, _ = decoder({"name": "h", "topic": "h/{sensor_id}", "readings": ["**"]}, max_readings=10)
    with pytest.raises(Invalid) as err:
        run(dec, "h/a", {f"k{i}": i for i in range(1000)})
    assert err.value.reason == "too_many_readings"
    deep = b'{"a":' * 40 + b"1" + b"}" * 40
    with pytest.raises(Invalid) as err:
        run(dec, "h/a", deep)
    assert err.value.reason == "json_too_deep"
    with pytest.raises(Invalid) as err:
        run(dec, "h/a", {"records": [{"v": i} for i in range(5000)]})
    assert err.value.reason == "too_many_readings"


def test_mappings_come_before_builtin_formats_and_an_unmatched_topic_is_no_mapping():
    dec, _ = decoder({"name": "s", "topic": "sensors/{sensor_id}", "readings": ["payload.*"]})
    assert rows(run(dec, "sensors/a", {"payload": {"t": 1}})) == [("a", "t", 1, None)]
    assert rows(run(dec, "sensors/a/temperature", b"3")) == [("a", "temperature", 3.0, None)]  # built-in number
    narrow, _ = decoder({"name": "s", "topic": "sensors/{sensor_id}"}, processing={"formats": ["log"]})
    with pytest.raises(Invalid) as err:
        run(narrow, "elsewhere/a", b"1")
    assert err.value.reason == "no_mapping" and "elsewhere/a" in err.value.detail


def test_mapped_readings_go_through_validate_and_unit_conversion():
    dec, cfg = decoder(TASMOTA, units={"bme280_temperature": {"canonical": "C", "convert": [
        {"unit": "F", "scale": 5 / 9, "offset": -160 / 9}]}})
    cands = run(dec, "tele/p/SENSOR", {"Time": "2026-12-07T10:00:00", "BME280": {"Temperature": 212}, "TempUnit": "F"})
    validate = Validate(300, 86400 * 30, "sensor", None, clock=lambda: NOW)
    reading = NormalizeUnits(cfg.units).process(validate.process(cands[0])[0])[0]
    assert (reading.metric, reading.value, reading.unit, reading.ts) == ("bme280_temperature", pytest.approx(100), "C", NOW)


def test_the_bridge_subscribes_every_mapping_topic_once():
    cfg = parse({"sources": [TASMOTA, {"name": "b", "topic": "tele/{sensor_id}/SENSOR", "readings": ["x"]},
                             {"name": "c", "topic": "v3/{a}@{b}/devices/{sensor_id}/up"}]})
    assert with_source_topics(cfg).topics == ("sensors/#", "system/#", "logs/#", "tele/+/SENSOR", "v3/+/devices/+/up")


def test_per_message_cost_stays_without_regex_for_names_seen_before():
    m = Mapping(parse({"sources": [TASMOTA]}).sources[0])
    msg = RawMessage("tele/a/SENSOR", b'{"Time":"2026-12-07T10:00:00","BME280":{"Temperature":1}}', time.time())
    m.decode(msg, {"sensor_id": "a"}, Limits())
    assert "BME280_Temperature" in m._names and "a" in m._sensors  # remembered: the next message costs no regex


@pytest.mark.parametrize("entry,key,text", [
    ({"encoding": "nope"}, "sources[1].encoding", "unknown payload encoding"),
    ({"topic": "x/{sensor_id"}, "sources[1].topic", ""),
    ({"sensor_id": "{device}"}, "sources[1].sensor_id", "{device} is not a capture"),
    ({"metric": "{unit}_{key}"}, "sources[1].metric", "{unit} is not a capture"),
    ({"readings": ["a..b"]}, "sources[1].readings[0]", "empty key"),
    ({"readings": ["a.x*"]}, "sources[1].readings[0]", "mixes '*'"),
    ({"exclude": ["link quality"]}, "sources[1].exclude[0]", "not a metric glob"),
    ({"timestamp": {"path": "t", "assume_zone": "Mars/Olympus"}}, "sources[1].timestamp.assume_zone", "unknown time zone"),
    ({"timestamp": {"path": "t", "format": "epoch_fortnights"}}, "sources[1].timestamp.format", "Invalid enum"),
    ({"unit": {"value": "C", "path": "U"}}, "sources[1].unit", "exactly one"),
    ({"ignore": ["a/#/b"]}, "sources[1].ignore[0]", "'#' only as the last level"),
    ({"topic": "x/{a+}/{b+}"}, "sources[1].topic", "at most one"),
    ({"topic": "x/y", "sensor_id": {"path": "id"}}, "sources[1].topic", "Kafka key must be a capture"),
    ({"name": "tasmota"}, "sources[1].name", "also sources[0]"),
    ({"colour": "red"}, "sources[1].colour", "unknown key"),
])
def test_every_mapping_error_is_refused_at_start_naming_the_key(entry, key, text):
    bad = {"name": "second", "topic": "s/{sensor_id}", **entry}
    with pytest.raises(ConfigError) as err:
        parse({"sources": [TASMOTA, bad]})
    assert str(err.value).startswith(f"{key}: ") and text in str(err.value)


def test_a_filter_already_covered_is_not_subscribed_again():
    # A broker sends one copy per matching subscription: tele/+/SENSOR under tele/# would arrive twice.
    cfg = parse({"mqtt": {"topics": ["tele/#"]}, "sources": [TASMOTA, {"name": "a", "topic": "x/{sensor_id}/y"},
                                                             {"name": "b", "topic": "x/{sensor_id}/{m}"}]})
    assert with_source_topics(cfg).topics == ("tele/#", "x/+/+")


def test_a_reading_validation_refuses_names_the_mapping_and_is_the_last_refused_sample():
    stats = MappingStats()
    dec, _ = decoder({"name": "long", "topic": "l/{sensor_id}"}, stats=stats)
    cands = run(dec, "l/a", {"ok": 1, "AVeryLongMetricNameIndeed": 2})
    validate = Validate(300, 86400, "sensor", None, clock=lambda: NOW)
    assert validate.process(cands[0])[0].metric == "ok"
    with pytest.raises(Invalid) as err:
        validate.process(cands[1])
    assert err.value.reason == "metric_too_long"
    assert err.value.detail.startswith("mapping long: metric 'avery_long_metric_name_indeed'")
    snap = stats.snapshot()[0]
    assert (snap["messages"], snap["refused"], snap["readings_refused"]) == (1, 0, 1)
    assert snap["last_refused"]["reason"] == "metric_too_long" and "AVeryLong" in snap["last_refused"]["payload"]


def test_the_counts_reach_prometheus_and_the_dashboard_view():
    from prometheus_client import CollectorRegistry

    from pipeline.dashboard.view import PipelineView
    from pipeline.observability.metrics import Metrics

    metrics = Metrics(CollectorRegistry())
    stats = MappingStats(metrics)
    dec, _ = decoder(TASMOTA, stats=stats)
    run(dec, "tele/a/LWT", b"Online")
    with pytest.raises(Invalid):
        run(dec, "tele/a/SENSOR", b"{not json")
    get = metrics.registry.get_sample_value
    assert get("pipeline_mapping_messages_total", {"mapping": "tasmota", "outcome": "ignored"}) == 1
    assert get("pipeline_mapping_messages_total", {"mapping": "tasmota", "outcome": "refused"}) == 1

    class Status:  # the daemon's LiveStatus hands the view the stats' snapshot
        def mappings(self):
            return stats.snapshot()
    body = PipelineView.mappings(type("V", (), {"status": Status()})())
    [m] = body["mappings"]
    assert (m["name"], m["ignored"], m["refused"], m["last_refused"]["reason"]) == ("tasmota", 1, 1, "invalid_json")
