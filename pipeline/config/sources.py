"""Config `sources:`: mappings that take payloads as devices write them (docs/formats.md, "Mappings").

Each entry names a topic template, an encoding and where its readings, timestamp, unit and ids are. The schema
is converted with the rest of the config; `check_sources` then refuses, naming the key, whatever a mapping
could only get wrong at the first message: an unknown encoding, a malformed template or path, a capture used but
not in the topic, a duplicate name, a bad glob, an unknown time zone.
"""
from __future__ import annotations

import re
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from ..registry import payloads
from ..registry.formats import captures as pattern_captures, mqtt_filter
from ..registry.paths import parse_path, parse_template
from .base import Section
from .errors import ConfigError

SourceName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=40)]
PathText = Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
Template = Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
Glob = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
METRIC_SPECIALS = ("path", "key")  # the metric template's own placeholders


class FromPath(Section):
    """A value read from the record: `{path: deviceInfo.devEui}`."""

    path: PathText


class TimestampSpec(Section):
    """Where a record's event time is and how it is written; without it, the receive time is the event time."""

    path: PathText
    format: Literal["iso", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns"] = "iso"
    # An ISO-8601 time without a zone is read in this IANA zone (Tasmota writes local time without one).
    assume_zone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "UTC"


class UnitSpec(Section):
    """The unit of the metrics matching `metrics` (globs; empty: all): a constant or a field of the record."""

    value: Annotated[str, msgspec.Meta(min_length=1, max_length=20)] | None = None
    path: PathText | None = None
    metrics: tuple[Glob, ...] = ()


class SourceMapping(Section):
    """One device family's dialect: which topics, which encoding, where the readings and their names are."""

    name: SourceName
    topic: Template
    encoding: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "json"
    records: PathText | None = None  # a path to a list: each element one record; none: the payload is one record
    readings: tuple[PathText, ...] = ("*",)
    metric: Template = "{path}"
    rename: dict[Annotated[str, msgspec.Meta(min_length=1, max_length=100)],
                 Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=20)]] = {}
    include: tuple[Glob, ...] = ()
    exclude: tuple[Glob, ...] = ()
    timestamp: TimestampSpec | None = None
    unit: UnitSpec | tuple[UnitSpec, ...] | None = None
    sensor_id: Template | FromPath = "{sensor_id}"
    location: Template | FromPath | None = None
    type: Template | FromPath | None = None
    # Text values that stand for numbers ({"ON": 1, "OFF": 0}); any other text is skipped and counted.
    text_values: dict[Annotated[str, msgspec.Meta(max_length=100)], float] = {}
    ignore: tuple[Template, ...] = ()  # topics of this family that carry no readings: acknowledged and counted
    # The topic capture that is the Kafka key (one device's messages in one partition, in order); default: the
    # first capture the sensor id template uses, else the topic's first capture.
    key: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None


def units_of(m: SourceMapping) -> tuple[UnitSpec, ...]:
    """The `unit` key as a tuple (one spec, several, or none)."""
    if m.unit is None:
        return ()
    return m.unit if isinstance(m.unit, tuple) else (m.unit,)


def key_capture(m: SourceMapping) -> str:
    """The capture of the topic that keys this mapping's messages in Kafka (docs/formats.md, "Ordering")."""
    if m.key:
        return m.key
    if isinstance(m.sensor_id, str):
        used = [n for k, n in parse_template(m.sensor_id) if k == "cap"]
        if used:
            return used[0]
    levels = re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\+?\}", m.topic)
    return levels[0] if levels else ""


def check_sources(sources: tuple[SourceMapping, ...]) -> None:
    """Everything a mapping says that the schema alone cannot check; ConfigError naming `sources[i].key`."""
    seen: dict[str, int] = {}
    for i, m in enumerate(sources):
        where = f"sources[{i}]"
        if m.name in seen:
            raise ConfigError(f"{where}.name: {m.name!r} is also sources[{seen[m.name]}]'s name (names are unique)")
        seen[m.name] = i
        _check_one(where, m)


def _fail(key: str, err: Exception | str) -> ConfigError:
    return ConfigError(f"{key}: {err}")


def _check_one(where: str, m: SourceMapping) -> None:
    try:
        captures = pattern_captures(m.topic)
        mqtt_filter(m.topic)
    except ValueError as err:
        raise _fail(f"{where}.topic", err) from None
    try:
        payloads.get(m.encoding)
    except LookupError as err:
        raise _fail(f"{where}.encoding", str(err).strip("'\"")) from None
    for j, pattern in enumerate(m.ignore):
        try:
            mqtt_filter(pattern)
        except ValueError as err:
            raise _fail(f"{where}.ignore[{j}]", err) from None
    paths = {"records": m.records} if m.records else {}
    paths.update({f"readings[{j}]": p for j, p in enumerate(m.readings)})
    if m.timestamp is not None:
        paths["timestamp.path"] = m.timestamp.path
    for key, text in paths.items():
        try:
            parse_path(text)
        except ValueError as err:
            raise _fail(f"{where}.{key}", err) from None
    if not m.readings:
        raise _fail(f"{where}.readings", "at least one path to readings")
    _check_template(f"{where}.metric", m.metric, captures, METRIC_SPECIALS)
    for key in ("sensor_id", "location", "type"):
        value = getattr(m, key)
        if isinstance(value, str):
            _check_template(f"{where}.{key}", value, captures)
        elif isinstance(value, FromPath):
            try:
                parse_path(value.path)
            except ValueError as err:
                raise _fail(f"{where}.{key}.path", err) from None
    key = key_capture(m)
    if not key or key not in captures:
        raise _fail(f"{where}.key" if m.key else f"{where}.topic",
                    f"the Kafka key must be a capture of the topic ({key or 'none'} is not in {m.topic!r}); "
                    "name one with `key:` or capture the device in the topic")
    if m.timestamp is not None:
        try:
            ZoneInfo(m.timestamp.assume_zone)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise _fail(f"{where}.timestamp.assume_zone", f"unknown time zone {m.timestamp.assume_zone!r} ({err})") from None
    for j, spec in enumerate(units_of(m)):
        at = f"{where}.unit" if not isinstance(m.unit, tuple) else f"{where}.unit[{j}]"
        if (spec.value is None) == (spec.path is None):
            raise _fail(at, "give exactly one of `value` (a constant unit) or `path` (a field holding it)")
        if spec.path is not None:
            try:
                parse_path(spec.path)
            except ValueError as err:
                raise _fail(f"{at}.path", err) from None
        _check_globs(f"{at}.metrics", spec.metrics)
    _check_globs(f"{where}.include", m.include)
    _check_globs(f"{where}.exclude", m.exclude)


def _check_template(key: str, text: str, captures: set[str], specials: tuple[str, ...] = ()) -> None:
    try:
        parts = parse_template(text)
    except ValueError as err:
        raise _fail(key, err) from None
    for kind, name in parts:
        if kind == "cap" and name not in captures and name not in specials:
            known = ", ".join(sorted(captures | set(specials))) or "none"
            raise _fail(key, f"{{{name}}} is not a capture of the topic (captures: {known}; a payload field is {{.{name}}})")


_GLOB = re.compile(r"^[A-Za-z0-9_*?\[\]!\-]+$")


def _check_globs(key: str, globs: tuple[str, ...]) -> None:
    for j, glob in enumerate(globs):
        if not _GLOB.fullmatch(glob) or glob.count("[") != glob.count("]"):
            raise _fail(f"{key}[{j}]", f"{glob!r} is not a metric glob (letters, digits, '_', '*', '?', '[...]')")
