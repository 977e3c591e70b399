"""Telegraf's MQTT output (pipeline/stages/telegraf.py): line protocol and the JSON serializer on
<root>/<host>/<plugin>, booleans as 0/1, text fields skipped and counted, never refusing the numbers beside them.

Payloads as Telegraf's documentation shows them: the JSON serializer README (plugins/serializers/json, "Examples":
the docker metric, standard and batch form, json_timestamp_units = "1s") and line protocol as Telegraf's cpu and
system inputs write it (the InfluxDB line protocol reference's syntax); topics as outputs.mqtt's default
`telegraf/{{ .Hostname }}/{{ .PluginName }}`.
"""
import orjson
import pytest
from prometheus_client import CollectorRegistry

from pipeline.observability.metrics import Metrics
from pipeline.records import Invalid, RawMessage
from pipeline.registry import formats, payloads
from pipeline.registry.formats import Limits
from pipeline.runtime.chain import StageChain
from pipeline.stages import formats as builtin_formats  # noqa: F401  (registers every built-in format)
from pipeline.stages.decode import Decode
from pipeline.stages.telegraf import parse_telegraf_json

DOCKER = {"fields": {"field_1": 30, "field_2": 4, "field_N": 59, "n_images": 660}, "name": "docker",
          "tags": {"host": "raynor"}, "timestamp": 1458229140}
VARIABLES = {"logs_root": "logs", "telegraf_root": "telegraf"}


def stage(*names: str) -> Decode:
    return Decode(65536, 100, formats=formats.select(names, VARIABLES))


def readings(decode: Decode, topic: str, payload: bytes) -> list[tuple]:
    return [(c.sensor_id, c.metric, c.value, c.timestamp) for c in decode.process(RawMessage(topic, payload, 0.0))]


def test_line_protocol_on_telegrafs_default_topic():
    decode = stage("log", "telegraf", "json", "number")
    payload = (b"cpu,cpu=cpu-total,host=web-1 usage_idle=98.5,usage_user=1.25,usage_guest=0i 1700000000000000000\n"
               b"system,host=web-1 load1=0.42,n_cpus=4i,uptime=3600i 1700000000500000000\n")
    assert readings(decode, "telegraf/web-1/cpu", payload) == [
        ("web-1", "cpu_usage_idle", 98.5, 1700000000.0), ("web-1", "cpu_usage_user", 1.25, 1700000000.0),
        ("web-1", "cpu_usage_guest", 0, 1700000000.0), ("web-1", "system_load1", 0.42, 1700000000.5),
        ("web-1", "system_n_cpus", 4, 1700000000.5), ("web-1", "system_uptime", 3600, 1700000000.5)]
    # the other default formats keep their topics
    assert readings(decode, "sensors/s1", b'{"metric": "t", "value": 1}') == [("s1", "t", 1, None)]
    assert readings(decode, "sensors/s1/t", b"2") == [("s1", "t", 2.0, None)]


def test_booleans_are_0_1_and_text_is_skipped_and_counted():
    decode = stage("telegraf")
    payload = b'system,host=h uptime_format="1 day,  2:03",ok=true,down=F,load1=0.5\n'
    assert readings(decode, "telegraf/h/system", payload) == [
        ("h", "system_ok", 1, None), ("h", "system_down", 0, None), ("h", "system_load1", 0.5, None)]
    assert decode.values_skipped == {"telegraf": 1}
    # the chain adds the tally to pipeline_format_values_skipped_total once per batch
    metrics = Metrics(CollectorRegistry())
    chain = StageChain([decode], metrics)
    out, dead = chain.run_batch([RawMessage("telegraf/h/system", payload, 0.0, topic="raw", offset=1)])
    chain.flush_counts()
    assert len(out) == 3 and not dead
    assert metrics.registry.get_sample_value("pipeline_format_values_skipped_total", {"format": "telegraf"}) == 2
    assert decode.values_skipped == {}


def test_only_text_fields_give_no_readings_and_no_refusal():
    decode = stage("telegraf")
    assert readings(decode, "telegraf/h/system", b'system,host=h uptime_format="up"') == []
    assert decode.values_skipped == {"telegraf": 1}


def test_host_becomes_the_sensor_id_by_the_naming_rule_and_the_kafka_key_is_the_host_level():
    router = formats.select(["log", "telegraf", "json", "number"], VARIABLES)
    decode = Decode(65536, 100, formats=router)
    assert readings(decode, "telegraf/Build Box 2/mem", b"mem used=1i 1")[0][:2] == ("Build_Box_2", "mem_used")
    assert router.key(b"telegraf/web-1/cpu") == b"web-1"


def test_topic_root_comes_from_config():
    decode = Decode(65536, 100, formats=formats.select(["telegraf", "json", "number"], {"telegraf_root": "tg"}))
    assert readings(decode, "tg/h/cpu", b"cpu usage_idle=1") == [("h", "cpu_usage_idle", 1.0, None)]
    # telegraf/h/cpu is now an ordinary <root>/<sensor>/<metric> topic: a bare number is expected there
    with pytest.raises(Invalid) as err:
        readings(decode, "telegraf/h/cpu", b"cpu usage_idle=1")
    assert err.value.reason == "value_not_number"


def test_bad_line_protocol_is_refused_naming_the_line():
    with pytest.raises(Invalid) as err:
        readings(stage("telegraf"), "telegraf/h/cpu", b"cpu usage_idle=1\ncpu usage_idle=oops\n")
    assert err.value.reason == "line_protocol_invalid" and err.value.detail.startswith("line 2:")


def test_telegraf_json_standard_and_batch_forms():
    decode = stage("telegraf_json")
    want = [("raynor", "docker_field_1", 30, 1458229140.0), ("raynor", "docker_field_2", 4, 1458229140.0),
            ("raynor", "docker_field_n", 59, 1458229140.0), ("raynor", "docker_n_images", 660, 1458229140.0)]
    assert readings(decode, "telegraf/raynor/docker", orjson.dumps(DOCKER)) == want
    batch = {"metrics": [DOCKER, {**DOCKER, "timestamp": 1458229150}]}
    got = readings(decode, "telegraf/raynor/docker", orjson.dumps(batch))
    assert got[:4] == want and [r[3] for r in got[4:]] == [1458229150.0] * 4


def test_telegraf_json_encoding_records_like_line_protocol():
    limits = Limits(100, 32)
    records = payloads.get("telegraf_json").parse(orjson.dumps(DOCKER), limits)
    assert records == [{"measurement": "docker", "tags": {"host": "raynor"}, "fields": DOCKER["fields"],
                        "time": 1458229140 * 10**9}]
    influx = payloads.get("influx").parse(b"docker,host=raynor field_1=30i,field_2=4i,field_N=59i,n_images=660i "
                                          b"1458229140000000000", limits)
    assert influx == records


@pytest.mark.parametrize("body, reason, what", [
    ([DOCKER], "telegraf_json_invalid", "expected a metric"),
    ({"metrics": []}, "telegraf_json_invalid", "non-empty list"),
    ({**DOCKER, "name": ""}, "telegraf_json_invalid", "name"),
    ({**DOCKER, "fields": {}}, "telegraf_json_invalid", "fields"),
    ({**DOCKER, "fields": {"a": {"b": 1}}}, "telegraf_json_invalid", "fields.a"),
    ({**DOCKER, "tags": {"host": 1}}, "telegraf_json_invalid", "tags"),
    ({**DOCKER, "timestamp": "2016-03-17T15:39:00Z"}, "telegraf_json_invalid", "timestamp"),
    ({"metrics": [DOCKER, 5]}, "telegraf_json_invalid", "metrics[1]"),
    ({"metrics": [DOCKER] * 30}, "too_many_readings", "metrics[25]"),
])
def test_telegraf_json_refusals_are_named(body, reason, what):
    with pytest.raises(Invalid) as err:
        parse_telegraf_json(orjson.dumps(body), Limits(100, 32))
    assert err.value.reason == reason and what in err.value.detail
