"""CBOR (RFC 8949, through cbor2) and MessagePack (through msgpack): the JSON object shapes, written in binary.

Both become the tree JSON gives (dicts with text keys, lists, str, int, float, bool, None), so every format and
mapping reads them alike. What JSON has no word for (RFC 8949 §6.1 calls this converting to JSON):
- dates: CBOR tags 0 and 1 and MessagePack's timestamp extension (-1) become an ISO-8601 string (CBOR) or epoch
  seconds (MessagePack), which the timestamp rules read;
- CBOR bignums (tags 2, 3) are integers, decimal fractions and bigfloats (tags 4, 5) and rationals floats;
- anything else is refused with a named reason (`cbor_unsupported_type`, `msgpack_unsupported_type`) naming the
  type and the key it sits under: byte strings, other CBOR tags, undefined and simple values, sets, MessagePack
  extension types, and map keys that are not text. The dead letter keeps the payload for a replay.

Bounded in time and memory: a declared length beyond the payload fails at the end of the payload without
allocating it (cbor2 reads in chunks; msgpack's max_*_len are set to the payload's size), nesting deeper than
validation.max_json_depth is refused (`*_too_deep`: cbor2's max_depth, msgpack's own stack limit and a walk that
stops past the limit), duplicate keys are refused as in JSON, and trailing bytes after the value too.

The first byte tells them from JSON on the `json` format's topics (`sniff`): JSON text starts with ASCII ('{' or
whitespace); a CBOR map is major type 5 (0xa0-0xbf), or the self-described CBOR tag 55799 (0xd9 0xd9 0xf7);
a MessagePack map is a fixmap (0x80-0x8f), map16 (0xde) or map32 (0xdf). The ranges do not overlap.
"""
from __future__ import annotations

import io
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import cbor2
import msgpack

from ..records import Invalid
from ..registry import payloads

JSON, CBOR, MSGPACK = "json", "cbor", "msgpack"
_SELF_DESCRIBED = b"\xd9\xd9\xf7"
_PLAIN = (str, int, float, bool, type(None))


def sniff(payload: bytes) -> str:
    """Which encoding a payload of the JSON object shapes is in, from its first byte (the rule above)."""
    first = payload[0] if payload else 0
    if first < 0x80:
        return JSON
    if 0xa0 <= first <= 0xbf or payload.startswith(_SELF_DESCRIBED):
        return CBOR
    if first <= 0x8f or first in (0xde, 0xdf):
        return MSGPACK
    return JSON  # not a map in either: JSON's parser says what is wrong with it


def _convert(value: Any, prefix: str) -> Any:
    """A non-JSON scalar -> its JSON counterpart, or Invalid naming it."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (Decimal, Fraction)):
        try:
            return float(value)
        except (OverflowError, ValueError):
            raise Invalid(f"{prefix}_invalid", f"number {str(value)[:40]} is beyond a double") from None
    if isinstance(value, msgpack.Timestamp):
        return value.to_unix()
    if isinstance(value, cbor2.CBORTag):
        raise Invalid(f"{prefix}_unsupported_type", f"CBOR tag {value.tag}")
    if isinstance(value, msgpack.ExtType):
        raise Invalid(f"{prefix}_unsupported_type", f"MessagePack extension type {value.code}")
    raise Invalid(f"{prefix}_unsupported_type", type(value).__name__)


# cbor2 decodes what sits under a tag as immutable (a frozendict, a tuple): the same tree, made plain.
# Exact types: MessagePack's ExtType is a tuple too, and is refused, not unpacked.
_IMMUTABLE = frozenset({cbor2.frozendict, tuple})


def _mutable(value: Any) -> dict | list:
    return dict(value) if type(value) is cbor2.frozendict else list(value)


def to_plain(obj: Any, max_depth: int, prefix: str) -> Any:
    """Check (and convert in place) a decoded tree: only JSON's types, text keys, at most `max_depth` deep.
    Iterative, so a hostile depth costs no recursion."""
    if isinstance(obj, _PLAIN):
        return obj
    if type(obj) in _IMMUTABLE:
        obj = _mutable(obj)
    if not isinstance(obj, (dict, list)):
        return _convert(obj, prefix)
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise Invalid(f"{prefix}_too_deep", f"nested deeper than {max_depth} levels")
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            if type(key) is not str and isinstance(node, dict):
                raise Invalid(f"{prefix}_unsupported_type", f"map key of type {type(key).__name__}, not text")
            if type(value) in _IMMUTABLE:
                value = node[key] = _mutable(value)
            if isinstance(value, (dict, list)):
                stack.append((value, depth + 1))
            elif not isinstance(value, _PLAIN):
                try:
                    node[key] = _convert(value, prefix)
                except Invalid as err:
                    raise Invalid(err.reason, f"{err.detail} under {key!r}") from None
    return obj


def _utf8_cause(err: BaseException) -> bool:
    while err is not None:
        if isinstance(err, UnicodeDecodeError):
            return True
        err = err.__cause__ or err.__context__
    return False


def parse_cbor(payload: bytes, max_depth: int = 32) -> Any:
    """One CBOR data item -> JSON's tree (the module's rules); Invalid with a named reason otherwise."""
    fp = io.BytesIO(payload)
    if payload.startswith(_SELF_DESCRIBED):  # RFC 8949 §3.4.6: a marker, not a value (and keeps the map mutable)
        fp.seek(len(_SELF_DESCRIBED))
    try:
        obj = cbor2.CBORDecoder(fp, max_depth=max_depth, allow_duplicate_keys=False,
                                strict_hashable_types=True).decode()
    except Exception as err:  # noqa: BLE001  untrusted bytes: every failure of the decoder is a refusal
        text = str(err)
        if "nesting depth" in text:
            raise Invalid("cbor_too_deep", f"nested deeper than {max_depth} levels") from None
        if _utf8_cause(err):
            raise Invalid("invalid_utf8", "a CBOR text string is not UTF-8") from None
        if "map key must be" in text:  # strict_hashable_types: a key that is not text (nor bytes)
            raise Invalid("cbor_unsupported_type", text[text.index("map key"):][:200]) from None
        if "Duplicate map key" in text:
            raise Invalid("duplicate_key", text[:200]) from None
        raise Invalid("cbor_invalid", f"{type(err).__name__}: {text[:200]}") from None
    if fp.tell() != len(payload):
        raise Invalid("cbor_invalid", f"{len(payload) - fp.tell()} bytes after the CBOR data item")
    return to_plain(obj, max_depth, "cbor")


def _no_duplicates(pairs: list[tuple[Any, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise Invalid("duplicate_key", "a map key appears twice")
    return out


def parse_msgpack(payload: bytes, max_depth: int = 32, max_map_len: int | None = None) -> Any:
    """One MessagePack object -> JSON's tree (the module's rules); Invalid with a named reason otherwise.
    `max_map_len`: a map declaring more entries is refused as too_many_readings before it is built (the json
    format's shapes: readings or envelope fields)."""
    size = len(payload)
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=True, timestamp=0, use_list=True,
                              object_pairs_hook=_no_duplicates, max_str_len=size, max_bin_len=size,
                              max_array_len=size, max_ext_len=size,
                              max_map_len=size // 2 if max_map_len is None else min(max_map_len, size // 2))
    except Invalid:
        raise
    except msgpack.StackError:
        raise Invalid("msgpack_too_deep", f"nested deeper than {max_depth} levels") from None
    except UnicodeDecodeError:
        raise Invalid("invalid_utf8", "a MessagePack string is not UTF-8") from None
    except msgpack.ExtraData as err:
        raise Invalid("msgpack_invalid", f"{len(err.extra)} bytes after the MessagePack object") from None
    except Exception as err:  # noqa: BLE001  untrusted bytes: every failure of the unpacker is a refusal
        text = str(err)
        if max_map_len is not None and "exceeds max_map_len" in text:
            raise Invalid("too_many_readings", f"a map of more than {max_map_len} entries") from None
        if "map key" in text:
            raise Invalid("msgpack_unsupported_type", text[:200]) from None
        raise Invalid("msgpack_invalid", f"{type(err).__name__}: {text[:200]}") from None
    return to_plain(obj, max_depth, "msgpack")


payloads.register(payloads.Encoding("cbor", lambda payload, limits: parse_cbor(payload, limits.max_json_depth),
                                    doc="CBOR (RFC 8949) as JSON's tree; binary-only types refused (stages/binary.py)"))
payloads.register(payloads.Encoding("msgpack", lambda payload, limits: parse_msgpack(payload, limits.max_json_depth),
                                    doc="MessagePack as JSON's tree; binary-only types refused (stages/binary.py)"))
