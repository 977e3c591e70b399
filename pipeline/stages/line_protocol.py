"""InfluxDB line protocol: one parser for MQTT payloads (Telegraf's default output) and files of history.

    <measurement>[,<tag_key>=<tag_value>...] <field_key>=<field_value>[,<field_key>=<field_value>...] [<timestamp>]

As the InfluxDB line protocol reference says it (docs.influxdata.com, "Line protocol"):
- Escapes: a backslash escapes a comma or a space in the measurement; a comma, an equals sign or a space in tag
  keys, tag values and field keys; a double quote or a backslash in a string field value. Two backslashes are one
  backslash everywhere; a backslash before any other character is a literal backslash. An element ending in a lone
  backslash is refused (it would escape what follows it).
- Field values: float (the default: 1, 1.0, 1., -1.5e+78, .5), integer with `i` (signed 64 bits), unsigned with `u`
  (64 bits), a double-quoted string, a boolean (t, T, true, True, TRUE, f, F, false, False, FALSE). A float beyond
  a double's range, an integer beyond its width, NaN and Inf spellings are refused.
- At least one field; tag values and keys not empty; the timestamp optional, Unix nanoseconds (a signed 64-bit
  integer); spaces separate the three parts (a run of spaces is one separator; a trailing \\r is ignored).
- A line starting with `#` is a comment; blank lines are skipped. A newline always ends a line (the reference
  does not allow one in a tag or field value).
- A field key written twice in one line: the last value wins (as InfluxDB stores it). Naming restrictions of a
  database (no leading `_`) are not this parser's business: Telegraf's names pass as written.

`parse_line` is the per-line entry a file importer uses; `parse_payload` reads a whole MQTT payload under the
validation limits (at most `max_readings` fields in all, stopping as soon as there are more). Every refusal is
`Invalid` with a named reason (`line_protocol_invalid`, `invalid_utf8`, `too_many_readings`) and, from
`parse_payload`, the line number. Work is linear in the line's length (no backtracking patterns).
"""
from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

from ..records import Invalid

INVALID = "line_protocol_invalid"
INT64_MIN, INT64_MAX, UINT64_MAX = -(1 << 63), (1 << 63) - 1, (1 << 64) - 1

# Each alternation's branches are disjoint (plain characters or a backslash pair) and possessive (`++`: nothing
# kept to backtrack into), so matching is linear in time and constant in memory.
_MEASUREMENT = re.compile(r"(?:[^\\, ]++|\\.)++", re.S)
_TAG = re.compile(r",((?:[^\\,= ]++|\\.)++)=((?:[^\\,= ]++|\\.)++)", re.S)
_TAG_SET = re.compile(r"(?:,(?:[^\\,= ]++|\\.)++=(?:[^\\,= ]++|\\.)++)*+", re.S)
_LINE_BYTES, _LINE_TEXT = re.compile(rb"[^\n]++"), re.compile(r"[^\n]++")
_KEY = re.compile(r"(?:[^\\,= ]++|\\.)++", re.S)
_STRING = re.compile(r'"((?:[^"\\]++|\\.)*+)"', re.S)
_BARE = re.compile(r"[^, ]+")
_SPACES = re.compile(r" +")
_TIMESTAMP = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"-?(?:[0-9]++(?:\.[0-9]*+)?|\.[0-9]++)(?:[eE][-+]?[0-9]++)?")
_INT = re.compile(r"-?[0-9]+")
_UINT = re.compile(r"[0-9]+")
# What a backslash escapes, per element, besides a second backslash.
_IN_MEASUREMENT, _IN_KEY, _IN_STRING = (",", " "), (",", "=", " "), ('"',)  # _IN_KEY: tag keys and values, field keys
_TRUE = frozenset({"t", "T", "true", "True", "TRUE"})
_FALSE = frozenset({"f", "F", "false", "False", "FALSE"})


class Line(NamedTuple):
    """One point: measurement, tags {key: value}, fields {key: float | int | str | bool}, Unix ns or None."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, Any]
    time_ns: int | None


def _unescape(text: str, escapes: tuple[str, ...]) -> str:
    """Drop the backslash of an escaped character (or of a second backslash); keep any other backslash. Splitting
    at each pair of backslashes first reads them left to right, as a scanner would, with str methods in C."""
    if "\\" not in text:
        return text
    pieces = text.split("\\\\")
    for i, piece in enumerate(pieces):
        if "\\" in piece:
            for char in escapes:
                piece = piece.replace("\\" + char, char)
            pieces[i] = piece
    return "\\".join(pieces)


def _fail(what: str, line: str, col: int) -> Invalid:
    return Invalid(INVALID, f"{what} at column {col + 1}: {line[:80]!r}")


def _field_value(token: str, line: str, col: int) -> Any:
    last = token[-1]
    if len(token) > 22 and last in "iu" and _UINT.fullmatch(token.lstrip("-"), 0, len(token.lstrip("-")) - 1):
        raise _fail("integer beyond 64 bits", line, col)  # before int(): 4,300 digits and more raise ValueError
    if last == "i" and _INT.fullmatch(token, 0, len(token) - 1):
        value = int(token[:-1])
        if not INT64_MIN <= value <= INT64_MAX:
            raise _fail("integer beyond 64 bits", line, col)
        return value
    if last == "u" and _UINT.fullmatch(token, 0, len(token) - 1):
        value = int(token[:-1])
        if value > UINT64_MAX:
            raise _fail("unsigned integer beyond 64 bits", line, col)
        return value
    if token in _TRUE:
        return True
    if token in _FALSE:
        return False
    if _FLOAT.fullmatch(token):
        value = float(token)
        if not math.isfinite(value):
            raise _fail("float beyond a double's range", line, col)
        return value
    raise _fail(f"field value {token[:30]!r} is not a float, integer, string or boolean", line, col)


def _decode(line: bytes | str) -> str:
    if isinstance(line, str):
        return line
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Invalid("invalid_utf8", f"byte {err.start + 1} is not UTF-8") from None


def parse_line(line: bytes | str, max_fields: int | None = None) -> Line | None:
    """One line of line protocol -> Line; None for a blank line or a comment; Invalid when it breaks the rules.
    `max_fields` (optional) refuses a line with more fields as too_many_readings, before parsing the rest."""
    text = _decode(line)
    if text.endswith("\r"):
        text = text[:-1]
    pos = len(text) - len(text.lstrip(" \t"))
    if pos == len(text) or text[pos] == "#":
        return None
    m = _MEASUREMENT.match(text, pos)
    if m is None:
        raise _fail("missing measurement", text, pos)
    measurement = _unescape(m.group(), _IN_MEASUREMENT)
    pos = m.end()
    tags: dict[str, str] = {}
    if pos < len(text) and text[pos] == ",":
        span = _TAG_SET.match(text, pos)
        tagset = span.group()
        if "\\" not in tagset:  # the usual case: str.split in C, not a match per tag
            tags = dict(pair.split("=") for pair in tagset[1:].split(",")) if tagset else {}
        else:
            for t in _TAG.finditer(tagset):
                tags[_unescape(t.group(1), _IN_KEY)] = _unescape(t.group(2), _IN_KEY)
        pos = span.end()
        if pos < len(text) and text[pos] == ",":
            raise _fail("tag is not key=value (an empty key or value, or an unescaped ',', '=' or ' ')", text, pos)
    s = _SPACES.match(text, pos)
    if s is None:
        raise _fail("expected a space before the fields", text, pos)
    pos = s.end()
    fields: dict[str, Any] = {}
    end = len(text)
    written = 0  # field pairs as written (a repeated key counts again: the bound is on work, not on the result)
    while True:
        k = _KEY.match(text, pos)
        if k is None or k.end() >= end or text[k.end()] != "=":
            raise _fail("field is not key=value", text, pos)
        key = _unescape(k.group(), _IN_KEY)
        pos = k.end() + 1
        if pos < end and text[pos] == '"':
            q = _STRING.match(text, pos)
            if q is None:
                raise _fail("string field value without its closing quote", text, pos)
            fields[key] = _unescape(q.group(1), _IN_STRING)
            pos = q.end()
        else:
            b = _BARE.match(text, pos)
            if b is None:
                raise _fail("field without a value", text, pos)
            fields[key] = _field_value(b.group(), text, pos)
            pos = b.end()
        written += 1
        if max_fields is not None and written > max_fields:
            raise Invalid("too_many_readings", f"more than {max_fields} fields")
        if pos < end and text[pos] == ",":
            pos += 1
            continue
        break
    time_ns = None
    if pos < end:
        s = _SPACES.match(text, pos)
        if s is None:
            raise _fail("expected a space or a comma after a field", text, pos)
        pos = s.end()
        ts = _TIMESTAMP.match(text, pos)
        if ts is not None:
            if len(ts.group()) > 20:
                raise _fail("timestamp beyond 64 bits", text, pos)
            time_ns = int(ts.group())
            if not INT64_MIN <= time_ns <= INT64_MAX:
                raise _fail("timestamp beyond 64 bits", text, pos)
            pos = ts.end()
            s = _SPACES.match(text, pos)
            if s is not None:
                pos = s.end()
        if pos < end:
            raise _fail("unexpected text after the fields (a timestamp is an integer of nanoseconds)", text, pos)
    return Line(measurement, tags, fields, time_ns)


def parse_payload(payload: bytes | str, max_readings: int) -> list[Line]:
    """Every point of a payload, lines separated by newlines; refused whole (naming the line) at the first bad
    line, or as soon as the points hold more than `max_readings` fields together."""
    out: list[Line] = []
    budget = max_readings
    bytes_in = isinstance(payload, bytes)
    # Non-empty lines found in C: empty lines cost nothing, and a line's number is counted only for an error.
    for found in (_LINE_BYTES if bytes_in else _LINE_TEXT).finditer(payload):
        try:
            point = parse_line(found.group(), budget)
        except Invalid as err:
            number = payload.count(b"\n" if bytes_in else "\n", 0, found.start()) + 1
            if err.reason == "too_many_readings":
                raise Invalid("too_many_readings", f"more than {max_readings} fields (line {number})") from None
            raise Invalid(err.reason, f"line {number}: {err.detail}") from None
        if point is not None:
            out.append(point)
            budget -= len(point.fields)
    if not out:
        raise Invalid(INVALID, "no points: only blank lines or comments")
    return out


def records(payload: bytes, limits: Any) -> list[dict]:
    """The `influx` payload encoding: one record per point, {"measurement", "tags", "fields", "time"} (ns or None)."""
    return [{"measurement": p.measurement, "tags": p.tags, "fields": p.fields, "time": p.time_ns}
            for p in parse_payload(payload, limits.max_readings)]
