"""Telegraf's MQTT output: InfluxDB line protocol (its default data_format) or its JSON serializer, on its default
topic layout `telegraf/{{ .Hostname }}/{{ .PluginName }}` (outputs.mqtt `topic`; the first level is
`processing.telegraf_topic_root`).

Formats `telegraf` (line protocol) and `telegraf_json` (JSON serializer): both take `<root>/<host>/<plugin>`; the
host is the sensor id (records.sensor_name's rule) and the Kafka key, every field of every point one reading named
`<measurement>_<field>` by records.metric_name ("cpu" "usage_idle" -> cpu_usage_idle), at the point's time
(line protocol: nanoseconds; JSON: `timestamp` in seconds, Telegraf's json_timestamp_units default 1s; none: the
receive time). Booleans are stored as 0/1; string fields are skipped and counted
(pipeline_format_values_skipped_total{format}), never refusing the numbers beside them. Tags are not part of a
reading: points that differ only by tags (the cpu plugin's cpu=cpu0, cpu=cpu1) share a reading's identity and the
first is kept; a mapping (`sources:`) names such readings from their tags.

Payload encodings `influx` (pipeline/stages/line_protocol.py) and `telegraf_json` (here) give a mapping the same
records: [{"measurement", "tags", "fields", "time" (ns or None)}].
"""
from __future__ import annotations

from typing import Any

from ..records import Invalid, RawMessage, metric_name, sensor_name
from ..registry import formats, payloads
from ..registry.formats import Limits
from . import line_protocol
from .decode import Candidate, parse_json

SENSOR_TYPE = "telegraf"
INVALID = "telegraf_json_invalid"
_SCALARS = (int, float, str, bool)


def _time_ns(value: Any, where: str) -> int | None:
    """Telegraf JSON `timestamp` (json_timestamp_units 1s: whole seconds; a fraction is kept) -> ns."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(INVALID, f"{where}.timestamp is not a number of seconds (json_timestamp_units 1s)")
    if isinstance(value, int):
        return value * 1_000_000_000
    if value != value or value in (float("inf"), float("-inf")):
        raise Invalid(INVALID, f"{where}.timestamp is not finite")
    return round(value * 1e9)


def parse_telegraf_json(payload: bytes, limits: Limits) -> list[dict]:
    """The `telegraf_json` encoding: one metric {"fields", "name", "tags", "timestamp"} or the batch form
    {"metrics": [...]} -> records like line protocol's; at most `max_readings` fields in all."""
    obj = parse_json(payload, limits.max_json_depth)
    if not isinstance(obj, dict):
        raise Invalid(INVALID, f"payload is a JSON {type(obj).__name__}, expected a metric or {{\"metrics\": [...]}}")
    batch = obj.get("metrics") if "name" not in obj else None
    if batch is None:
        batch, prefix = [obj], ""
    elif not isinstance(batch, list) or not batch:
        raise Invalid(INVALID, "'metrics' must be a non-empty list of metrics")
    else:
        prefix = "metrics"
    out, budget = [], limits.max_readings
    for i, metric in enumerate(batch):
        where = f"{prefix}[{i}]" if prefix else "metric"
        if not isinstance(metric, dict):
            raise Invalid(INVALID, f"{where} is not an object")
        name, fields, tags = metric.get("name"), metric.get("fields"), metric.get("tags", {})
        if not isinstance(name, str) or not name:
            raise Invalid(INVALID, f"{where}.name must be a non-empty string")
        if not isinstance(fields, dict) or not fields:
            raise Invalid(INVALID, f"{where}.fields must be a non-empty object")
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            raise Invalid(INVALID, f"{where}.tags must be an object of strings")
        budget -= len(fields)
        if budget < 0:
            raise Invalid("too_many_readings", f"more than {limits.max_readings} fields ({where})")
        for key, value in fields.items():
            if value is None or not isinstance(value, _SCALARS):
                raise Invalid(INVALID, f"{where}.fields.{key[:40]} is a {type(value).__name__}, not a number, "
                                       "boolean or string")
        out.append({"measurement": name, "tags": tags, "fields": fields,
                    "time": _time_ns(metric.get("timestamp"), where)})
    return out


def candidates(records: list[dict], host: str, fmt: str, msg: RawMessage, limits: Limits) -> list[Candidate]:
    """Records -> one candidate per numeric or boolean field; text fields skipped and counted under `fmt`."""
    sensor_id = sensor_name(host)
    out, skipped = [], 0
    for rec in records:
        ns = rec["time"]
        ts = None if ns is None else ns / 1e9
        prefix = rec["measurement"]
        for field, value in rec["fields"].items():
            if isinstance(value, str):
                skipped += 1
                continue
            if isinstance(value, bool):
                value = int(value)
            out.append(Candidate(sensor_id, metric_name(f"{prefix}_{field}"), value, ts, SENSOR_TYPE, None, None, msg))
    if skipped and limits.skipped is not None:
        limits.skipped[fmt] = limits.skipped.get(fmt, 0) + skipped
    return out


def decode_line_protocol(msg: RawMessage, levels: dict[str, str], limits: Limits) -> list[Candidate]:
    """<root>/<host>/<plugin>: InfluxDB line protocol, Telegraf's default data_format."""
    return candidates(line_protocol.records(msg.payload, limits), levels["sensor_id"], "telegraf", msg, limits)


def decode_telegraf_json(msg: RawMessage, levels: dict[str, str], limits: Limits) -> list[Candidate]:
    """<root>/<host>/<plugin>: Telegraf's JSON serializer (data_format = "json")."""
    return candidates(parse_telegraf_json(msg.payload, limits), levels["sensor_id"], "telegraf_json", msg, limits)


PATTERN = "{telegraf_root}/{sensor_id}/{plugin}"
TELEGRAF = formats.register(formats.Format(
    "telegraf", PATTERN, decode_line_protocol,
    doc="Telegraf's MQTT output in line protocol, <processing.telegraf_topic_root>/<host>/<plugin>"))
TELEGRAF_JSON = formats.register(formats.Format(
    "telegraf_json", PATTERN, decode_telegraf_json,
    doc="Telegraf's MQTT output in its JSON serializer, <processing.telegraf_topic_root>/<host>/<plugin>"))

payloads.register(payloads.Encoding("influx", line_protocol.records,
                                    doc="InfluxDB line protocol: [{measurement, tags, fields, time (ns)}]"))
payloads.register(payloads.Encoding("telegraf_json", parse_telegraf_json,
                                    doc="Telegraf's JSON serializer, one metric or {metrics: [...]}: like influx"))
