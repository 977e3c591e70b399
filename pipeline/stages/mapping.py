"""The mapping engine: a configured mapping (config `sources:`, docs/formats.md) compiled into a payload Format.

Each mapping becomes a `Format` (pipeline/registry/formats.py) whose pattern is its topic template and whose key
is its device's topic capture, so one Router serves the MQTT bridge (the Kafka key, from topic levels only) and
the decode stage (this module's decoder). The decoder parses the payload with the mapping's encoding, reads the
readings by its paths, names them by the one rule (`records.metric_name`, `records.sensor_name`) and hands the
validate stage ordinary candidates. Everything a message would otherwise redo is compiled once: paths, templates,
globs, the time zone; names already seen are remembered (a bounded memo), so a message costs no regex.
"""
from __future__ import annotations

import re
from datetime import datetime
from fnmatch import translate
from typing import Any, Callable
from zoneinfo import ZoneInfo

import msgspec

from ..config.sources import FromPath, SourceMapping, key_capture, units_of
from ..records import Invalid, RawMessage, metric_name, sensor_name
from ..registry import payloads
from ..registry.formats import Format, Limits, captures, mqtt_filter
from ..registry.paths import parse_template
from .decode import Candidate
from .mapping_paths import compile_field, compile_path, leaves
from .mapping_stats import MappingCounts, MappingStats

MEMO_MAX = 4096  # names remembered per mapping; past it the memo starts again (hostile name churn stays bounded)
_MISSING = object()
EPOCH_DIVISORS = {"epoch_s": 1.0, "epoch_ms": 1e3, "epoch_us": 1e6, "epoch_ns": 1e9}


def _globs(globs: tuple[str, ...]) -> Callable[[str], bool] | None:
    if not globs:
        return None
    rx = re.compile("|".join(f"(?:{translate(g)})" for g in globs))
    return lambda name: rx.match(name) is not None


def _template(text: str) -> Callable[..., str | None]:
    """A template -> (levels, record, path keys, last key) -> text; None when a field it names is absent."""
    parts = []
    for kind, name in parse_template(text):
        if kind == "field":
            parts.append(("field", compile_field(name)))
        else:
            parts.append((kind, name))
    if len(parts) == 1 and parts[0][0] == "cap" and parts[0][1] not in ("path", "key"):
        name = parts[0][1]
        return lambda levels, record, keys=(), key="": levels[name]
    if all(k == "lit" for k, _ in parts):
        constant = "".join(t for _, t in parts)
        return lambda levels, record, keys=(), key="": constant

    def fill(levels: dict, record: Any, keys: tuple = (), key: str = "") -> str | None:
        out = []
        for kind, what in parts:
            if kind == "lit":
                out.append(what)
            elif kind == "field":
                value = what(record)
                if value is None or isinstance(value, (dict, list, bool)):
                    return None
                out.append(value if isinstance(value, str) else str(value))
            elif what in levels:
                out.append(levels[what])
            elif what == "path":
                out.append("_".join(map(str, keys)))
            else:  # key
                out.append(str(key))
        return "".join(out)
    return fill


def _value_of(spec: str | FromPath | None) -> Callable[[dict, Any], str | None] | None:
    """sensor_id / location / type: a template or {path: ...} -> (levels, record) -> text or None."""
    if spec is None:
        return None
    if isinstance(spec, FromPath):
        get = compile_field(spec.path)

        def from_path(levels: dict, record: Any) -> str | None:
            value = get(record)
            if value is None or isinstance(value, (dict, list, bool)):
                return None
            return value if isinstance(value, str) else str(value)
        return from_path
    fill = _template(spec)
    return lambda levels, record: fill(levels, record)


class Mapping:
    """One compiled mapping: its Format(s) and the decoder behind them."""

    def __init__(self, spec: SourceMapping, counts: MappingCounts | None = None):
        self.spec, self.name, self.counts = spec, spec.name, counts
        self.parse = payloads.get(spec.encoding).parse
        self.records = compile_field(spec.records) if spec.records else None
        self.paths = [compile_path(p) for p in spec.readings]
        self.metric_is_path = spec.metric == "{path}"
        self.metric = _template(spec.metric)
        self.rename = dict(spec.rename)
        self.include, self.exclude = _globs(spec.include), _globs(spec.exclude)
        self.units = [(_globs(u.metrics) or (lambda _m: True), u.value, compile_field(u.path) if u.path else None)
                      for u in units_of(spec)]
        ts = spec.timestamp
        self.ts = None if ts is None else (compile_field(ts.path), ts.format, ZoneInfo(ts.assume_zone), ts.path)
        self.sensor = _value_of(spec.sensor_id)
        self.location, self.type = _value_of(spec.location), _value_of(spec.type)
        self.text_values = dict(spec.text_values)
        self._names: dict[str, tuple | None] = {}
        self._sensors: dict[str, str] = {}
        self._times: dict[str, float] = {}

    def formats(self) -> list[Format]:
        """The mapping's ignore topics (first), then its own topic."""
        out = []
        for j, pattern in enumerate(self.spec.ignore):
            caps = sorted(captures(pattern))
            out.append(Format(f"{self.name}.ignore[{j}]", pattern, self._ignore, key_level=caps[0] if caps else 1,
                              doc=f"mapping {self.name}: not readings"))
        out.append(Format(self.name, self.spec.topic, self.decode, key_level=key_capture(self.spec),
                          doc=f"mapping {self.name} ({self.spec.encoding})"))
        return out

    def _ignore(self, msg: RawMessage, levels: dict, limits: Limits) -> list:
        if self.counts is not None:
            self.counts.ignored_topic()
        return []

    _ignore.accepts_empty = True  # type: ignore[attr-defined]  (an empty retained message on an ignored topic)

    def decode(self, msg: RawMessage, levels: dict[str, str], limits: Limits) -> list[Candidate]:
        """Payload -> candidate readings; Invalid (its reason, the mapping's name in the text) when it does not fit."""
        try:
            out, skipped = self._decode(msg, levels, limits)
        except Invalid as err:
            detail = f"mapping {self.name}: {err.detail or err.reason}"
            if self.counts is not None:
                self.counts.refused_message(err.reason, detail, msg.mqtt_topic, msg.payload)
            raise Invalid(err.reason, detail) from None
        if self.counts is not None:
            self.counts.decoded(len(out), skipped)
        return out

    def _decode(self, msg: RawMessage, levels: dict[str, str], limits: Limits) -> tuple[list[Candidate], int]:
        tree = self.parse(msg.payload, limits)
        limit = limits.max_readings
        if self.records is None:
            # An encoding's own shape: influx and telegraf_json give a list of records, text one value (the
            # record {"value": it}); any other tree is one record.
            records: Any = tree if type(tree) is list else (tree,) if type(tree) is dict else ({"value": tree},)
            if len(records) > limit:
                raise Invalid("too_many_readings", f"{len(records)} records > {limit}")
        else:
            records = self.records(tree)
            if type(records) is not list:
                raise Invalid("records_not_list", f"{self.spec.records!r} is not a list in the payload")
            if len(records) > limit:
                raise Invalid("too_many_readings", f"{len(records)} records > {limit}")
        out: list[Candidate] = []
        skipped = 0
        matched = False
        names, text_values, by_path, counts = self._names, self.text_values, self.metric_is_path, self.counts
        sensors, location, stype_of = self._sensors, self.location, self.type
        for record in records:
            if type(record) is not dict:
                raise Invalid("record_not_object", f"a record is a {type(record).__name__}, expected an object")
            ts = self._timestamp(record) if self.ts is not None else None
            sensor = sensors.get(self.sensor(levels, record)) or self._sensor(levels, record)
            loc = location(levels, record) if location is not None else None
            stype = stype_of(levels, record) if stype_of is not None else None
            for walk in self.paths:
                found = walk(record, limit)
                if not found:
                    continue
                matched = True
                for keys, value in leaves(found, limit):
                    t = type(value)
                    if t is bool:
                        value = 1 if value else 0
                    elif t is str:
                        value = text_values.get(value)
                        if value is None:
                            skipped += 1
                            continue
                    elif t is not float and t is not int:
                        skipped += 1  # null, or a type the encoding has and JSON has not
                        continue
                    if by_path:
                        raw = keys[0] if len(keys) == 1 else "_".join(map(str, keys))
                    else:
                        raw = self.metric(levels, record, keys, keys[-1] if keys else "")
                        if raw is None:
                            raise Invalid("metric_missing", f"a field of the metric template {self.spec.metric!r} is absent")
                    named = names.get(raw, _MISSING)  # a CBOR/msgpack key may be a number: hashable too
                    if named is _MISSING:
                        named = self._name(raw)
                    if named is None:
                        continue
                    metric, unit_at = named
                    out.append(Candidate(sensor, metric, value, ts, stype, loc,
                                         None if unit_at is None else self._unit(unit_at, record), msg, counts))
                    if len(out) > limit:
                        raise Invalid("too_many_readings", f"more than {limit} readings in one message")
        if not matched:
            raise Invalid("no_readings", f"none of the reading paths {list(self.spec.readings)} is in the payload")
        return out, skipped

    def _name(self, raw: Any) -> tuple | None:
        """A raw name -> (stored metric, index of its unit rule or None); None when include/exclude drop it."""
        if len(self._names) >= MEMO_MAX:
            self._names.clear()
        metric = metric_name(str(raw))
        named: tuple | None
        if (self.include is not None and not self.include(metric)) or (self.exclude is not None and self.exclude(metric)):
            named = None
        else:
            unit_at = next((i for i, (match, _, _) in enumerate(self.units) if match(metric)), None)
            named = (self.rename.get(metric, metric), unit_at)
        self._names[raw] = named
        return named

    def _unit(self, at: int, record: Any) -> str | None:
        _, constant, get = self.units[at]
        if constant is not None:
            return constant
        value = get(record)
        return value if isinstance(value, str) else None

    def _sensor(self, levels: dict, record: Any) -> str:
        raw = self.sensor(levels, record)
        if raw is None or raw == "":
            raise Invalid("sensor_id_missing", f"no sensor id ({self.spec.sensor_id!r}) in the topic or payload")
        sid = self._sensors.get(raw)
        if sid is None:
            if len(self._sensors) >= MEMO_MAX:
                self._sensors.clear()
            sid = self._sensors[raw] = sensor_name(raw)
        return sid

    def _timestamp(self, record: Any) -> float:
        get, fmt, zone, path = self.ts
        raw = get(record)
        if type(raw) is str:
            seen = self._times.get(raw)
            if seen is not None:  # devices of one family often share a second: parsed once
                return seen
        if raw is None:
            raise Invalid("timestamp_missing", f"no timestamp at {path!r}")
        if fmt == "iso":
            if type(raw) is not str or len(raw) > 40:
                raise Invalid("timestamp_invalid", f"{str(raw)[:40]!r} at {path!r} is not an ISO-8601 date-time")
            try:
                dt = datetime.fromisoformat(raw)
                if dt.tzinfo is None:
                    dt = dt.replace(tzinfo=zone)
                ts = dt.timestamp()
            except (ValueError, OverflowError, OSError):
                raise Invalid("timestamp_invalid", f"{raw[:40]!r} at {path!r} is not an ISO-8601 date-time") from None
            if len(self._times) >= 256:
                self._times.clear()
            self._times[raw] = ts
            return ts
        if type(raw) is str and 0 < len(raw) <= 25 and raw.isdigit():
            raw = int(raw)  # not remembered: the text of an epoch changes with every message
        if type(raw) is not int and type(raw) is not float:
            raise Invalid("timestamp_invalid", f"{str(raw)[:40]!r} at {path!r} is not a number ({fmt})")
        return raw / EPOCH_DIVISORS[fmt]


def compile_sources(sources: tuple[SourceMapping, ...], stats: MappingStats | None = None) -> list[Mapping]:
    """The configured mappings, compiled, in config order (each counting into `stats` when given)."""
    return [Mapping(s, stats.counts(s.name, s.topic, s.encoding) if stats is not None else None) for s in sources]


def source_formats(mappings: list[Mapping]) -> list[Format]:
    """Routing order: every mapping's ignore topics, then the mappings themselves."""
    ignores = [f for m in mappings for f in m.formats()[:-1]]
    return ignores + [m.formats()[-1] for m in mappings]


def covers(general: str, specific: str) -> bool:
    """Whether every topic MQTT filter `specific` matches is matched by `general` too (a broker delivers one copy
    per matching subscription, so a covered filter is not subscribed again)."""
    g, s = general.split("/"), specific.split("/")
    for i, level in enumerate(g):
        if level == "#":
            return True
        if i >= len(s) or s[i] == "#" or (level != "+" and level != s[i]):
            return False
    return len(g) == len(s)


def source_filters(sources: tuple[SourceMapping, ...], subscribed: tuple[str, ...] = ()) -> list[str]:
    """The MQTT filters the mappings' topics need beyond `subscribed`, none covered by another, in config order
    (ignore topics are not subscribed: they are what arrives under these, or under mqtt.topics)."""
    wanted = [mqtt_filter(s.topic) for s in sources]
    out: list[str] = []
    for i, f in enumerate(wanted):
        others = [*subscribed, *out, *(w for j, w in enumerate(wanted) if j > i and w != f)]
        if f not in out and f not in subscribed and not any(covers(o, f) for o in others):
            out.append(f)
    return out


def with_source_topics(cfg) -> Any:
    """The MQTT section with every mapping's topic filter added to `mqtt.topics` (subscribed automatically)."""
    extra = source_filters(cfg.sources, tuple(cfg.mqtt.topics))
    if not extra:
        return cfg.mqtt
    return msgspec.structs.replace(cfg.mqtt, topics=(*cfg.mqtt.topics, *extra))
