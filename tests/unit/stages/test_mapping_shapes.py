"""A mapping without `records:` over an encoding that is not one object: a list of records (influx,
telegraf_json, a JSON array) gives each element as a record; one value (text) is the record {"value": ...}."""
from __future__ import annotations

import pytest

from pipeline.config import parse
from pipeline.records import Invalid, RawMessage
from pipeline.stages.decode import Decode
from pipeline.stages.formats import router

NOW = 1_796_634_000.0


def decode(source: dict, topic: str, payload: bytes, max_readings: int = 100) -> list:
    dec = Decode(65536, max_readings, formats=router(parse({"sources": [source]})))
    return [(c.sensor_id, c.metric, c.value, c.timestamp) for c in dec.process(RawMessage(topic, payload, NOW))]


LINES = {"name": "lp", "topic": "tg/{sensor_id}/{plugin}", "encoding": "influx", "readings": ["fields.*"],
         "metric": "{.measurement}_{key}", "timestamp": {"path": "time", "format": "epoch_ns"}}


def test_each_line_of_line_protocol_is_a_record():
    got = decode(LINES, "tg/web01/cpu", b"cpu,cpu=cpu-total usage_idle=92.5 1717000000000000000\n"
                                        b"mem used_percent=41.25,total=16i 1717000010000000000\n")
    assert got == [("web01", "cpu_usage_idle", 92.5, 1717000000.0), ("web01", "mem_used_percent", 41.25, 1717000010.0),
                   ("web01", "mem_total", 16, 1717000010.0)]


def test_a_json_array_is_a_list_of_records():
    source = {"name": "arr", "topic": "arr/{sensor_id}", "readings": ["*"]}
    assert decode(source, "arr/d1", b'[{"a": 1}, {"b": 2.5}]') == [("d1", "a", 1, None), ("d1", "b", 2.5, None)]


@pytest.mark.parametrize("payload,value", [(b"21.5", 21.5), (b"ON", 1), (b"off", 0), (b" -3 ", -3.0)])
def test_one_value_is_the_record_value(payload, value):
    source = {"name": "one", "topic": "{sensor_id}/sensor/{metric}/state", "encoding": "text", "readings": ["value"],
              "metric": "{metric}"}
    assert decode(source, "node1/sensor/temperature/state", payload) == [("node1", "temperature", value, None)]


def test_text_that_is_not_a_value_is_skipped_not_refused():
    source = {"name": "one", "topic": "{sensor_id}/sensor/{metric}/state", "encoding": "text", "readings": ["value"],
              "metric": "{metric}"}
    assert decode(source, "node1/sensor/temperature/state", b"nan") == []


def test_a_list_of_more_records_than_readings_allowed_is_refused():
    source = {"name": "arr", "topic": "arr/{sensor_id}", "readings": ["*"]}
    with pytest.raises(Invalid) as err:
        decode(source, "arr/d1", b"[" + b",".join([b"{}"] * 11) + b"]", max_readings=10)
    assert err.value.reason == "too_many_readings"
