"""Payload encodings by name: bytes -> a tree of dicts, lists and scalars (what a mapping then reads).

An encoding is what a payload is written in (json, cbor, msgpack, line protocol, ...), not where its readings
sit: a format (pipeline/registry/formats.py) or a configured mapping names an encoding and says where to look.
A parser raises Invalid with a named reason for a payload it cannot read, in bounded time and memory (`Limits`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .formats import Limits

# (payload, limits) -> tree; raises Invalid to refuse the message.
Parser = Callable[[bytes, Limits], Any]


@dataclass(frozen=True)
class Encoding:
    """One payload encoding: its name, its parser and what it is (for the docs and `--help` texts)."""

    name: str
    parse: Parser
    doc: str = ""


_ENCODINGS: dict[str, Encoding] = {}


def register(encoding: Encoding) -> Encoding:
    """Add an encoding under its name (the last registration of a name wins)."""
    _ENCODINGS[encoding.name] = encoding
    return encoding


def get(name: str) -> Encoding:
    """The encoding registered under `name`; LookupError naming the known ones otherwise."""
    try:
        return _ENCODINGS[name]
    except KeyError:
        raise LookupError(f"unknown payload encoding {name!r} (registered: {', '.join(sorted(_ENCODINGS))})") from None


def registered() -> dict[str, Encoding]:
    """Every registered encoding by name."""
    return dict(_ENCODINGS)
