"""Decode stage: an MQTT topic and payload become candidate readings (not yet validated).

Topic contract (README, "Topics and payloads"):
  <root>/<sensor_id>           JSON object: {"type", "location", "timestamp", "readings": {metric: value}}
                               or a single reading {"metric": "temperature", "value": 21.4, ...}
  <root>/<sensor_id>/<metric>  a bare number (what small devices send)

The JSON objects may also come as CBOR or MessagePack maps (told apart by the first byte: binary.sniff).

Each contract is a payload format registered by name (pipeline/registry/formats.py): "json" and "number" here,
"log" for application logs (pipeline/stages/logs.py); config `processing.formats` selects them, in order.
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable

import msgspec
import orjson

from ..records import Invalid, RawMessage
from ..registry import formats, payloads
from ..registry.formats import Limits, Router
from ..runtime.stage import RecordStage
from .binary import CBOR, JSON as JSON_TEXT, parse_cbor, parse_msgpack, sniff

# Fields a JSON reading may carry. Anything else is refused so a typo ("temprature") is not lost silently.
ENVELOPE_FIELDS = frozenset({"type", "location", "timestamp", "readings", "metric", "value", "unit", "seq"})
# Every '"key":' in the text is a key: a '"' then optional whitespace (\s of a bytes pattern) then ':'. With the
# whitespace deleted, each is one '":' and every '":' is one: bytes.count of that is the regex's count (findall),
# at a third of its cost and without a list of the matches.
_WHITESPACE = b" \t\n\r\x0b\x0c"


def keys_written(payload: bytes) -> int:
    """How many times the text writes a key: matches of the pattern '"\\s*:'."""
    return payload.translate(None, _WHITESPACE).count(b'":')


class Candidate(msgspec.Struct, gc=False):
    """One reading as the device sent it; the validate stage checks every field. A msgspec Struct, built as a
    dataclass was (positionally or by keyword): built in C and untracked by the garbage collector, as
    records.Reading says why. Its fields hold the payload's parsed values, its RawMessage and its mapping's
    counts (`origin`), none of which refers back to it."""

    sensor_id: str
    metric: Any
    value: Any
    timestamp: Any
    sensor_type: Any
    location: Any
    unit: Any
    source: RawMessage
    # The mapping that made it (its counts: pipeline/stages/mapping_stats.py), so a refusal names the mapping.
    origin: Any = None


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise Invalid("duplicate_key", f"key {key!r} appears twice")
        seen[key] = value
    return seen


def _count_keys(obj: Any) -> int:
    """Keys of every object in a parsed tree, without recursion (the depth is checked before)."""
    n = 0
    stack = [obj]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            n += len(node)
            for v in node.values():
                if type(v) is dict or type(v) is list:
                    stack.append(v)
        elif type(node) is list:
            for v in node:
                if type(v) is dict or type(v) is list:
                    stack.append(v)
    return n


def _count_keys_flat(obj: Any) -> int:
    """Keys of a flat reading or a flat `readings` object: exact for the common shapes, a lower bound otherwise."""
    if type(obj) is not dict:
        return 0
    readings = obj.get("readings")
    return len(obj) + (len(readings) if type(readings) is dict else 0)


def json_depth(obj: Any, limit: int) -> int:
    """Nesting depth of parsed JSON (a scalar 0, `[]` 1, `[[1]]` 2), counted without recursion and stopping
    once past `limit`: the answer is then limit + 1, whatever the real depth."""
    if not isinstance(obj, (dict, list)):
        return 0
    deepest = 1
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        for child in (node.values() if isinstance(node, dict) else node):
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return deepest


def check_json_depth(payload: bytes, obj: Any, max_depth: int) -> None:
    """Refuse JSON nested deeper than `max_depth`. Fewer brackets in the text than the limit (nearly every
    message) settles it without walking the object."""
    if payload.count(b"[") + payload.count(b"{") <= max_depth:
        return
    depth = json_depth(obj, max_depth)
    if depth > max_depth:
        raise Invalid("json_too_deep", f"nested deeper than {max_depth} levels")


def parse_json(payload: bytes, max_depth: int = 32) -> Any:
    """orjson on the fast path; nesting deeper than `max_depth` and duplicate keys (which orjson merges
    silently) are refused. The depth is checked before anything here walks the object recursively."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        text = str(err)
        if "depth limit" in text or "ecursion" in text:  # orjson's own limit (1024), far above ours
            raise Invalid("json_too_deep", f"nested deeper than {max_depth} levels") from None
        if "UTF-8" in text:
            raise Invalid("invalid_utf8", text) from None
        if "infinity" in text:
            raise Invalid("value_not_finite", text) from None
        raise Invalid("invalid_json", text) from None
    check_json_depth(payload, obj, max_depth)
    # Every '"key":' in the text is a key; fewer keys parsed than written means duplicates
    # (or a string value containing '":', which the exact slow path below sorts out). Each key written holds
    # one ':' of its own, so no more ':' than keys parsed (nearly every message) settles it without counting keys.
    if isinstance(obj, (dict, list)):
        flat = _count_keys_flat(obj)
        if payload.count(b":") > flat:
            written = keys_written(payload)
            if written > flat and written > _count_keys(obj):
                json.loads(payload, object_pairs_hook=_reject_duplicate_keys)
    return obj


def parse_bare_number(payload: bytes) -> float:
    text = payload.strip()
    try:
        value = float(text)
    except ValueError:
        raise Invalid("value_not_number", f"payload {payload[:40]!r} is not a number") from None
    # float() accepts 'nan' and 'inf' spellings: JSON numbers are what the contract allows.
    if not re.fullmatch(rb"-?\d+(\.\d+)?([eE][-+]?\d+)?", text):
        raise Invalid("value_not_number", f"payload {payload[:40]!r} is not a plain number")
    return value


def decode_json(msg: RawMessage, levels: dict[str, str], limits: Limits) -> list[Candidate]:
    """<root>/<sensor_id>: a JSON object of readings ({"readings": {metric: value}}) or a single reading
    ({"metric", "value"}), with the envelope fields; the same objects in CBOR or MessagePack are told from JSON
    by their first byte (pipeline/stages/binary.py)."""
    sensor_id = levels["sensor_id"]
    payload = msg.payload
    try:
        obj = parse_json(payload, limits.max_json_depth)
    except Invalid:
        # JSON text starts with ASCII, so orjson refuses a CBOR or MessagePack map at its first byte; they are
        # told apart only then (binary.sniff), and JSON's path costs nothing more.
        kind = sniff(payload)
        if kind == JSON_TEXT:
            raise
        if kind == CBOR:
            obj = parse_cbor(payload, limits.max_json_depth)
        else:  # a map larger than any of this format's shapes is refused before it is built
            obj = parse_msgpack(payload, limits.max_json_depth, max(limits.max_readings, len(ENVELOPE_FIELDS)))
    if not isinstance(obj, dict):
        raise Invalid("not_an_object", f"payload is a JSON {type(obj).__name__}, expected an object")
    unknown = obj.keys() - ENVELOPE_FIELDS
    if unknown:
        raise Invalid("unknown_field", f"unknown field(s): {', '.join(sorted(map(repr, unknown)))[:200]}")
    ts, stype, loc, unit = obj.get("timestamp"), obj.get("type"), obj.get("location"), obj.get("unit")
    readings = obj.get("readings")
    if readings is not None:
        if "metric" in obj or "value" in obj:
            raise Invalid("ambiguous_reading", "both 'readings' and 'metric'/'value' given")
        if not isinstance(readings, dict):
            raise Invalid("readings_not_object", "'readings' must be an object of metric: value")
        if not readings:
            raise Invalid("missing_field", "'readings' is empty")
        if len(readings) > limits.max_readings:
            raise Invalid("too_many_readings", f"{len(readings)} readings > {limits.max_readings}")
        return [Candidate(sensor_id, m, v, ts, stype, loc, unit, msg) for m, v in readings.items()]
    if "metric" not in obj or "value" not in obj:
        raise Invalid("missing_field", "expected 'readings' or both 'metric' and 'value'")
    return [Candidate(sensor_id, obj["metric"], obj["value"], ts, stype, loc, unit, msg)]


def decode_number(msg: RawMessage, levels: dict[str, str], limits: Limits) -> list[Candidate]:
    """<root>/<sensor_id>/<metric>: a bare number (what small devices send)."""
    value = parse_bare_number(msg.payload)
    return [Candidate(levels["sensor_id"], levels["metric"], value, None, None, None, None, msg)]


JSON = formats.register(formats.Format("json", "{root}/{sensor_id}", decode_json,
                                       doc="JSON object: a readings map or a single reading"))
NUMBER = formats.register(formats.Format("number", "{root}/{sensor_id}/{metric}", decode_number,
                                         doc="a bare number, the metric in the topic"))


class Decode(RecordStage):
    """RawMessage -> candidate readings; message-level problems raise Invalid. The payload format is the first
    of `formats` (pipeline/registry/formats.py) whose topic pattern matches; `routes` (topic root -> decoder of
    (msg, levels)) is checked before them."""

    name = "decode"

    def __init__(self, max_payload_bytes: int, max_readings: int,
                 routes: dict[str, Callable[[RawMessage, list[str]], list]] | None = None, max_json_depth: int = 32,
                 formats: Router | None = None):
        self.max_payload_bytes = max_payload_bytes
        self.max_readings = max_readings
        self.max_json_depth = max_json_depth
        self.routes = routes or {}  # topic root -> decoder for a contract other than readings
        self.formats = formats if formats is not None else Router([JSON, NUMBER])
        self.values_skipped: dict[str, int] = {}  # format -> values its decoder skipped (the chain counts them)
        self.limits = Limits(max_readings, max_json_depth, self.values_skipped)

    def process(self, msg: RawMessage) -> list:
        payload = msg.payload
        size = msg.original_size or len(payload)
        if size > self.max_payload_bytes:
            raise Invalid("payload_too_large", f"{size} bytes > {self.max_payload_bytes}")
        empty = not payload or not payload.strip()
        parts = msg.mqtt_topic.split("/")
        if self.routes:
            route = self.routes.get(parts[0])
            if route is not None:
                if empty:
                    raise Invalid("payload_empty")
                return route(msg, parts)
        fmt, levels = self.formats.route(msg, parts)
        # A decoder may take empty payloads (a mapping's ignored topics: a retained message being cleared).
        if empty and not getattr(fmt.decode, "accepts_empty", False):
            raise Invalid("payload_empty")
        return fmt.decode(msg, levels, self.limits)


payloads.register(payloads.Encoding("json", lambda payload, limits: parse_json(payload, limits.max_json_depth),
                                    doc="JSON (RFC 8259); duplicate keys and nesting past validation.max_json_depth refused"))


_BOOLEAN_WORDS = {"true": True, "on": True, "false": False, "off": False}


def parse_text(payload: bytes, limits: Limits) -> float | bool | str:
    """The `text` encoding: a plain number (as the `number` format reads it) -> float; true/false/on/off in any
    case -> a boolean (ESPHome's and Zigbee2MQTT's states); any other UTF-8 text -> the text, which a mapping
    skips and counts. Surrounding whitespace is ignored."""
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError as err:
        raise Invalid("invalid_utf8", f"byte {err.start + 1} is not UTF-8") from None
    if not text:
        raise Invalid("payload_empty")
    word = _BOOLEAN_WORDS.get(text.lower()) if len(text) <= 5 else None
    if word is not None:
        return word
    try:
        return parse_bare_number(payload)
    except Invalid:
        return text


payloads.register(payloads.Encoding("text", parse_text,
                                    doc="a plain number; true/false/on/off as a boolean; other text as text"))
