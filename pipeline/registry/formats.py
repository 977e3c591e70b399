"""Payload formats: an entry is a name, a topic pattern, a decoder, a partition key and a sensor's partition.

A pattern is an MQTT filter whose levels are literal, `+`, `#` (last: any remaining levels, none included),
`{name}` (one level, captured; `{sensor_id}` must not be empty) or `{var}` naming a config value the selection
fills in (e.g. `{logs_root}`). The MQTT bridge asks the selected formats for the Kafka key (`Router.key`: from
the topic's levels only, on paho's network thread, never decoding the payload); the decode stage asks them for
the decoder (`Router.route`). The first selected format whose pattern matches takes the message.

A format may declare a stateful operator (`operator`): a factory, handed `OperatorServices` (the config, metrics,
a durable store's connection, the right to publish over MQTT), for a `FormatOperator`. Its runner
(pipeline/runtime/format_operator.py) runs it as a stage right after decoding, on the consumer thread, in message
order, and tells it which partitions this instance holds (pipeline/ingest/dispatch.py's rebalance callbacks).
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from ..records import Invalid, RawMessage
from .paths import CAPTURE_NAME

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
    """A format's stateful operator: takes the records its decoder made (`accepts`, in message order) and returns
    what goes on (candidate readings, ...), refusing a record through `refused.add` (pipeline/runtime/stage.py).
    Whatever it must keep across a restart it makes durable inside `process_batch`: the batch goes to the sinks,
    and its offsets can be committed, only after. Partition hooks are called on the consumer thread."""

    accepts: type

    def start(self) -> None: ...
    def process_batch(self, items: list, refused: Any) -> list: ...
    def partitions_assigned(self, partitions: set[int]) -> None: ...
    def partitions_revoked(self, partitions: set[int]) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class OperatorServices:
    """What a format operator's factory is handed: `config` (the frozen Config; the operator reads its own
    section), `metrics`, `connect` (a new autocommit PostgreSQL connection: its durable store), `publish`
    ((topic, payload, retain) -> accepted; MQTT QoS 1) and `retrying` ((fn, operation) -> fn's result, transient
    errors retried until the daemon stops)."""

    config: Any
    metrics: Any
    connect: Callable[[], Any]
    publish: Callable[[str, bytes, bool], bool]
    retrying: Callable[[Callable[[], Any], str], Any]


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
    operator: Callable[[OperatorServices], FormatOperator] | None = None
    doc: str = ""

    def sensor_partition(self, sensor_id: str, partitions: int) -> int:
        """The partition this format's messages of `sensor_id` go to."""
        return crc32_partition(self.sensor_key(sensor_id), partitions)


_FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    """Add a format under its name (replacing one of the same name: the last registration wins)."""
    _parse(fmt.pattern, {})  # a malformed pattern is refused at registration
    if not isinstance(fmt.key_level, int) and fmt.key_level not in captures(fmt.pattern):
        raise ValueError(f"format {fmt.name!r}: key level {{{fmt.key_level}}} is not in its pattern {fmt.pattern!r}")
    _FORMATS[fmt.name] = fmt
    return fmt


def unregister(name: str) -> None:
    """Remove a format (tests that register one of their own)."""
    _FORMATS.pop(name, None)


def registered() -> dict[str, Format]:
    """Every registered format by name."""
    return dict(_FORMATS)


def captures(pattern: str) -> set[str]:
    """The names a pattern captures (one level, several levels, or inside a level of text)."""
    levels, _ = _parse(pattern, {})
    out: set[str] = set()
    for kind, text in levels:
        if kind in ("cap", "multi"):
            out.add(text)
        elif kind == "mixed":
            out.update(text.groupindex)
    return out


def _mixed_level(pattern: str, level: str) -> re.Pattern:
    """A level of text and captures ('{application}@{tenant}') -> a regex with one group per capture."""
    parts = re.split(r"(\{[^{}]*\})", level)
    rx, names, previous_cap = [], set(), False
    for part in parts:
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1]
            if not CAPTURE_NAME.fullmatch(name) or name in names:
                raise ValueError(f"pattern {pattern!r}: level {level!r} has a bad or repeated capture {part}")
            if previous_cap:
                raise ValueError(f"pattern {pattern!r}: level {level!r} has two captures with no text between them")
            names.add(name)
            rx.append(f"(?P<{name}>.+?)")
            previous_cap = True
        elif part:
            if "{" in part or "}" in part or "+" in part or "#" in part:
                raise ValueError(f"pattern {pattern!r}: level {level!r} mixes text and a wildcard")
            rx.append(re.escape(part))
            previous_cap = False
    return re.compile("".join(rx))


def _parse(pattern: str, variables: dict[str, str]) -> tuple:
    """Pattern -> (levels as (kind, text), any depth). kind: lit, any (+), cap ({name}), multi ({name+}: one or more
    levels, at most one per pattern, not with '#'), mixed (text and captures in one level: text is a regex)."""
    levels = pattern.split("/")
    deep = levels[-1] == "#"
    if deep:
        levels = levels[:-1]
    out: list[tuple] = []
    seen: set[str] = set()
    for lv in levels:
        if lv == "#":
            raise ValueError(f"pattern {pattern!r}: '#' only as the last level")
        if lv.startswith("{") and lv.endswith("}") and lv.count("{") == 1:
            name = lv[1:-1]
            multi = name.endswith("+")
            name = name.removesuffix("+")
            if name in variables and not multi:
                out.append(("lit", variables[name]))
                continue
            if not CAPTURE_NAME.fullmatch(name):
                raise ValueError(f"pattern {pattern!r}: capture {lv!r} is not a name (letters, digits, '_')")
            if name in seen:
                raise ValueError(f"pattern {pattern!r}: capture {{{name}}} appears twice")
            seen.add(name)
            out.append(("multi" if multi else "cap", name))
        elif lv == "+":
            out.append(("any", ""))
        elif "{" in lv or "}" in lv:
            rx = _mixed_level(pattern, lv)
            if seen & set(rx.groupindex):
                raise ValueError(f"pattern {pattern!r}: a capture appears twice")
            seen.update(rx.groupindex)
            out.append(("mixed", rx))
        elif "+" in lv or "#" in lv:
            raise ValueError(f"pattern {pattern!r}: level {lv!r} mixes text and a wildcard")
        else:
            out.append(("lit", lv))
    multis = [i for i, (k, _) in enumerate(out) if k == "multi"]
    if len(multis) > 1 or (multis and deep):
        raise ValueError(f"pattern {pattern!r}: at most one {{name+}} level, and not with '#'")
    return tuple(out), deep


def mqtt_filter(pattern: str, variables: dict[str, str] | None = None) -> str:
    """The MQTT subscription filter a pattern needs: captures become '+', a {name+} level '#' (what follows it is
    checked when a message arrives: MQTT has no filter for it)."""
    levels, deep = _parse(pattern, dict(variables or {}))
    out = []
    for kind, text in levels:
        if kind == "multi":
            return "/".join([*out, "#"])
        out.append(text if kind == "lit" else "+")
    return "/".join([*out, "#"] if deep else out)


class _Compiled:
    """A selected format's pattern, matched against topic levels (str for decoding, bytes for the key)."""

    __slots__ = ("fmt", "n", "deep", "open", "lits", "blits", "mixed", "bmixed", "sid", "caps", "multi", "key_index",
                 "key_of", "captures", "match", "bmatch")

    def __init__(self, fmt: Format, variables: dict[str, str]):
        self.fmt = fmt
        levels, self.deep = _parse(fmt.pattern, variables)
        self.n = n = len(levels)
        m = next((i for i, (k, _) in enumerate(levels) if k == "multi"), None)
        self.open = self.deep or m is not None  # takes topics longer than its levels
        # A level after a {name+} level is addressed from the end of the topic (a negative index).
        at = (lambda i: i) if m is None else (lambda i: i if i < m else i - n)
        self.multi = None if m is None else (levels[m][1], slice(m, (m + 1 - n) or None))
        self.lits = tuple((at(i), t) for i, (k, t) in enumerate(levels) if k == "lit")
        self.blits = tuple((i, t.encode()) for i, t in self.lits)
        self.mixed = tuple((at(i), rx) for i, (k, rx) in enumerate(levels) if k == "mixed")
        self.bmixed = tuple((i, re.compile(rx.pattern.encode(), re.S)) for i, rx in self.mixed)
        # {sensor_id} never matches an empty level: such a topic is dead-lettered as topic_missing_sensor_id.
        self.sid = next((at(i) for i, (k, t) in enumerate(levels) if k == "cap" and t == "sensor_id"), None)
        self.caps = tuple((at(i), t) for i, (k, t) in enumerate(levels) if k == "cap")
        self.key_index, self.key_of = self._keyer(fmt.key_level)
        self.captures = _capturer(self.caps) if not self.mixed and m is None else self._capture_all
        self.match, self.bmatch = self._matcher(self.lits, self.mixed), self._matcher(self.blits, self.bmixed)

    def _keyer(self, key_level: str | int) -> tuple[int | None, Callable[[list], bytes]]:
        """(the key's level index when it is one level counted from the start, else None; parts -> key)."""
        if isinstance(key_level, int):
            i = key_level
            return i, lambda p: p[i] if len(p) > i else p[0]
        if self.multi is not None and self.multi[0] == key_level:
            span = self.multi[1]
            return None, lambda p: b"/".join(p[span])
        i = next((i for i, t in self.caps if t == key_level), None)
        if i is None:  # a capture inside a level of text and captures: the whole level
            i = next(i for i, rx in self.mixed if key_level in rx.groupindex)
        return (i if i >= 0 else None), lambda p: p[i]

    def _matcher(self, lits: tuple, mixed: tuple) -> Callable[[list], bool]:
        """parts -> whether this pattern takes them; the two usual shapes without a loop or a method call."""
        n, sid = self.n, self.sid
        if not self.open and not lits and not mixed and sid is not None:
            return lambda p: len(p) == n and bool(p[sid])
        if self.deep and len(lits) == 1 and lits[0][0] == 0 and sid is None and not mixed:
            text = lits[0][1]
            return lambda p: p[0] == text and len(p) >= n
        if not self.open and not mixed and sid is not None and len(lits) == 2:  # a mapping's usual 'a/{sensor_id}/b'
            (i0, t0), (i1, t1) = lits
            return lambda p: len(p) == n and p[i0] == t0 and p[i1] == t1 and bool(p[sid])
        return lambda p: self.fits(p, lits, mixed)

    def fits(self, parts: list, lits: tuple, mixed: tuple = ()) -> bool:
        if (len(parts) < self.n) if self.open else (len(parts) != self.n):
            return False
        for i, text in lits:
            if parts[i] != text:
                return False
        for i, rx in mixed:
            if rx.fullmatch(parts[i]) is None:
                return False
        return self.sid is None or bool(parts[self.sid])

    def _capture_all(self, parts: list[str]) -> dict[str, str]:
        out = {name: parts[i] for i, name in self.caps}
        for i, rx in self.mixed:
            out.update(rx.fullmatch(parts[i]).groupdict())
        if self.multi is not None:
            out[self.multi[0]] = "/".join(parts[self.multi[1]])
        return out


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
        fixed = [c.n for c in self.formats if not c.open]
        self.max_levels = max(fixed) if fixed else 0
        # Every format keying on the same level: the key is that level of any topic, as fast as a split.
        indexes = {c.key_index for c in self.formats}
        self._key_index = indexes.pop() if len(indexes) == 1 else None
        if any(c.open and not c.deep for c in self.formats):  # a {name+} level: topics of any length
            self.max_levels = 1 << 16

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
                return c.key_of(parts)
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
        raise Invalid("no_mapping", f"topic {msg.mqtt_topic[:120]!r} matches no mapping (sources) and no payload format")

    def sensor_partition(self, sensor_id: str, partitions: int) -> int:
        """The partition of a sensor known only by id: the first selected format's mapping (formats whose key is
        not the sensor id say so in `sensor_key`)."""
        fmt = self.formats[0].fmt if self.formats else None
        return fmt.sensor_partition(sensor_id, partitions) if fmt else crc32_partition(sensor_key(sensor_id), partitions)


def select(names: Iterable[str], variables: dict[str, str] | None = None, where: str = "processing.formats",
           before: Iterable[Format] = ()) -> Router:
    """A Router over `before` (formats not registered: configured mappings), then the named formats, in that order;
    an unknown name is refused, naming the config key."""
    chosen = list(before)
    for i, name in enumerate(names):
        fmt = _FORMATS.get(name)
        if fmt is None:
            known = ", ".join(sorted(_FORMATS))
            raise LookupError(f"{where}[{i}]: unknown format {name!r} (registered: {known})")
        chosen.append(fmt)
    return Router(chosen, variables)
