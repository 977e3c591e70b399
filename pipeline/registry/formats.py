"""Payload formats: an entry is a name, a topic pattern, a decoder, a partition key and a sensor's partition.

A pattern is an MQTT filter whose levels are literal, `+`, `#` (last: any remaining levels, none included),
`{name}` (one level, captured; `{sensor_id}` must not be empty) or `{var}` naming a config value the selection
fills in (e.g. `{logs_root}`). The MQTT bridge asks the selected formats for the Kafka key (`Router.key`: from
the topic's levels only, on paho's network thread, never decoding the payload); the decode stage asks them for
the decoder (`Router.route`). The first selected format whose pattern matches takes the message.

A format may declare a stateful operator (`operator`): a factory for an object with durable state, partition
hooks and the right to publish (`FormatOperator`). Nothing fills that slot yet; the runner will.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from ..records import Invalid, RawMessage

# (message, captured levels, limits) -> candidate records; raises Invalid to refuse the message.
Decoder = Callable[[RawMessage, dict[str, str], "Limits"], list]


@dataclass(frozen=True, slots=True)
class Limits:
    """What a decoder may be handed per message (validation section)."""

    max_readings: int = 100
    max_json_depth: int = 32
    # Values a decoder skipped, neither stored nor refused (text fields of line protocol), by format name: the
    # decode stage owns the dict and the chain adds it to pipeline_format_values_skipped_total.
    skipped: dict[str, int] | None = None


class FormatOperator(Protocol):
    """A format's stateful operator (declared slot): durable state per partition, the right to publish."""

    def process(self, records: list) -> list: ...
    def partitions_assigned(self, partitions: set[int]) -> None: ...
    def partitions_revoked(self, partitions: set[int]) -> None: ...
    def flush(self) -> None: ...


def crc32_partition(key: bytes, partitions: int) -> int:
    """librdkafka's default partitioner (consistent_random: CRC32 of the key) for a non-empty key."""
    return zlib.crc32(key) % partitions


def sensor_key(sensor_id: str) -> bytes:
    """The Kafka key of a format that keys by sensor id: the id itself."""
    return sensor_id.encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class Format:
    """One payload format. `key_level`: the captured level that is the Kafka key (one sensor's messages stay in
    one partition, in order), or its index (a level under `#`; a topic without it is keyed by its first level);
    `sensor_key`: a sensor id -> the key its messages carry, for sensors known only
    from the database (their partition without a message)."""

    name: str
    pattern: str
    decode: Decoder
    key_level: str | int = "sensor_id"
    sensor_key: Callable[[str], bytes] = sensor_key
    operator: Callable[[Any], FormatOperator] | None = None
    doc: str = ""

    def sensor_partition(self, sensor_id: str, partitions: int) -> int:
        """The partition this format's messages of `sensor_id` go to."""
        return crc32_partition(self.sensor_key(sensor_id), partitions)


_FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    """Add a format under its name (replacing one of the same name: the last registration wins)."""
    _parse(fmt.pattern, {})  # a malformed pattern is refused at registration
    if not isinstance(fmt.key_level, int) and fmt.key_level not in _captures(fmt.pattern):
        raise ValueError(f"format {fmt.name!r}: key level {{{fmt.key_level}}} is not in its pattern {fmt.pattern!r}")
    _FORMATS[fmt.name] = fmt
    return fmt


def unregister(name: str) -> None:
    """Remove a format (tests that register one of their own)."""
    _FORMATS.pop(name, None)


def registered() -> dict[str, Format]:
    """Every registered format by name."""
    return dict(_FORMATS)


def _captures(pattern: str) -> set[str]:
    return {lv[1:-1] for lv in pattern.split("/") if lv.startswith("{") and lv.endswith("}")}


def _parse(pattern: str, variables: dict[str, str]) -> tuple:
    """Pattern -> (levels as (kind, text), any depth). kind: lit, any (+), cap ({name})."""
    levels = pattern.split("/")
    deep = levels[-1] == "#"
    if deep:
        levels = levels[:-1]
    out = []
    for lv in levels:
        if lv == "#":
            raise ValueError(f"pattern {pattern!r}: '#' only as the last level")
        if lv.startswith("{") and lv.endswith("}"):
            name = lv[1:-1]
            out.append(("lit", variables[name]) if name in variables else ("cap", name))
        elif lv == "+":
            out.append(("any", ""))
        elif "{" in lv or "}" in lv or "+" in lv:
            raise ValueError(f"pattern {pattern!r}: level {lv!r} mixes text and a placeholder")
        else:
            out.append(("lit", lv))
    return tuple(out), deep


class _Compiled:
    """A selected format's pattern, matched against topic levels (str for decoding, bytes for the key)."""

    __slots__ = ("fmt", "n", "deep", "lits", "blits", "sid", "caps", "key_index", "captures", "match", "bmatch")

    def __init__(self, fmt: Format, variables: dict[str, str]):
        self.fmt = fmt
        levels, self.deep = _parse(fmt.pattern, variables)
        self.n = len(levels)
        self.lits = tuple((i, t) for i, (k, t) in enumerate(levels) if k == "lit")
        self.blits = tuple((i, t.encode()) for i, t in self.lits)
        # {sensor_id} never matches an empty level: such a topic is dead-lettered as topic_missing_sensor_id.
        self.sid = next((i for i, (k, t) in enumerate(levels) if k == "cap" and t == "sensor_id"), None)
        self.caps = tuple((i, t) for i, (k, t) in enumerate(levels) if k == "cap")
        self.key_index = fmt.key_level if isinstance(fmt.key_level, int) else next(
            i for i, t in self.caps if t == fmt.key_level)
        self.captures = _capturer(self.caps)
        self.match, self.bmatch = self._matcher(self.lits), self._matcher(self.blits)

    def _matcher(self, lits: tuple) -> Callable[[list], bool]:
        """parts -> whether this pattern takes them; the two usual shapes without a loop or a method call."""
        n, sid = self.n, self.sid
        if not self.deep and not lits and sid is not None:
            return lambda p: len(p) == n and bool(p[sid])
        if self.deep and len(lits) == 1 and lits[0][0] == 0 and sid is None:
            text = lits[0][1]
            return lambda p: p[0] == text
        return lambda p: self.fits(p, lits)

    def fits(self, parts: list, lits: tuple) -> bool:
        if (len(parts) < self.n) if self.deep else (len(parts) != self.n):
            return False
        for i, text in lits:
            if parts[i] != text:
                return False
        return self.sid is None or bool(parts[self.sid])



def _capturer(caps: tuple) -> Callable[[list[str]], dict[str, str]]:
    """parts -> {name: level}: a dict display for the usual one to three captures (a comprehension per message
    cost a third of a microsecond, about as much as decoding a small reading)."""
    if len(caps) == 1:
        (i0, n0), = caps
        return lambda p: {n0: p[i0]}
    if len(caps) == 2:
        (i0, n0), (i1, n1) = caps
        return lambda p: {n0: p[i0], n1: p[i1]}
    if len(caps) == 3:
        (i0, n0), (i1, n1), (i2, n2) = caps
        return lambda p: {n0: p[i0], n1: p[i1], n2: p[i2]}
    return lambda p: {name: p[i] for i, name in caps}


class Router:
    """The selected formats, in order: key for the bridge, decoder for the decode stage, sensor -> partition."""

    def __init__(self, formats: Iterable[Format], variables: dict[str, str] | None = None):
        self.formats = [_Compiled(f, dict(variables or {})) for f in formats]
        fixed = [c.n for c in self.formats if not c.deep]
        self.max_levels = max(fixed) if fixed else 0
        # Every format keying on the same level: the key is that level of any topic, as fast as a split.
        indexes = {c.key_index for c in self.formats}
        self._key_index = indexes.pop() if len(indexes) == 1 else None

    def key(self, mqtt_topic: bytes) -> bytes:
        """The Kafka key of a topic: its format's key level; a topic no format takes keeps the second level
        (first if only one) so it is spread like others and dead-lettered by the decode stage."""
        i = self._key_index
        if i is not None:
            parts = mqtt_topic.split(b"/", i + 1)
            if len(parts) > i:
                return parts[i]
            return parts[1] if len(parts) > 1 else parts[0]
        parts = mqtt_topic.split(b"/")
        for c in self.formats:
            if c.bmatch(parts):
                return parts[c.key_index] if len(parts) > c.key_index else parts[0]
        return parts[1] if len(parts) > 1 else parts[0]

    def route(self, msg: RawMessage, parts: list[str]) -> tuple[Format, dict[str, str]]:
        """The format that takes this message and its captured levels; Invalid when none does."""
        for c in self.formats:
            if c.match(parts):
                return c.fmt, c.captures(parts)
        if len(parts) < 2 or parts[1] == "":
            raise Invalid("topic_missing_sensor_id", f"topic {msg.mqtt_topic!r} has no sensor id level")
        if len(parts) > self.max_levels:
            raise Invalid("topic_too_deep", f"topic {msg.mqtt_topic!r} has {len(parts)} levels, at most {self.max_levels}")
        raise Invalid("topic_no_format", f"topic {msg.mqtt_topic[:120]!r} matches no payload format")

    def sensor_partition(self, sensor_id: str, partitions: int) -> int:
        """The partition of a sensor known only by id: the first selected format's mapping (formats whose key is
        not the sensor id say so in `sensor_key`)."""
        fmt = self.formats[0].fmt if self.formats else None
        return fmt.sensor_partition(sensor_id, partitions) if fmt else crc32_partition(sensor_key(sensor_id), partitions)


def select(names: Iterable[str], variables: dict[str, str] | None = None, where: str = "processing.formats") -> Router:
    """A Router over the named formats, in that order; an unknown name is refused, naming the config key."""
    chosen = []
    for i, name in enumerate(names):
        fmt = _FORMATS.get(name)
        if fmt is None:
            known = ", ".join(sorted(_FORMATS))
            raise LookupError(f"{where}[{i}]: unknown format {name!r} (registered: {known})")
        chosen.append(fmt)
    return Router(chosen, variables)
