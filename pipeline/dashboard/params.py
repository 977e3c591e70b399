"""Query and path parameters, checked before anything reaches a query: a bad one is a 400 naming it."""
from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Mapping

MAX_INT64 = 2**63 - 1


class BadParam(Exception):
    """A parameter failed validation; the app answers 400 with {"error", "parameter"}."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def choice(args: Mapping[str, str], name: str, options: tuple[str, ...], default: str) -> str:
    value = args.get(name)
    if value is None or value == "":
        return default
    if value not in options:
        raise BadParam(name, f"expected one of {', '.join(options)}")
    return value


def integer(args: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    return to_int(raw, name, lo, hi)


def to_int(raw: str, name: str, lo: int, hi: int) -> int:
    if not re.fullmatch(r"[+-]?\d{1,19}", raw.strip()):
        raise BadParam(name, "expected an integer")
    value = int(raw)
    if not lo <= value <= hi:
        raise BadParam(name, f"expected an integer from {lo} to {hi}")
    return value


def text(args: Mapping[str, str], name: str, max_len: int, pattern: re.Pattern | None = None,
         required: bool = False) -> str | None:
    value = args.get(name)
    if value is None or value == "":
        if required:
            raise BadParam(name, "required")
        return None
    return check_text(value, name, max_len, pattern)


def check_text(value: str, name: str, max_len: int, pattern: re.Pattern | None = None) -> str:
    if len(value) > max_len:
        raise BadParam(name, f"at most {max_len} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise BadParam(name, f"must match {pattern.pattern}")
    if any(ord(c) < 32 for c in value):
        raise BadParam(name, "control characters are not allowed")
    return value


def timestamp(args: Mapping[str, str], name: str) -> float | None:
    """Epoch seconds or an ISO-8601 date-time (naive means UTC)."""
    raw = args.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        iso = raw.strip().replace("Z", "+00:00")
        if "T" in iso:
            iso = iso.replace(" ", "+")  # an unescaped '+' of an offset arrives as a space in a query string
        try:
            parsed = datetime.fromisoformat(iso)
        except ValueError:
            raise BadParam(name, "expected epoch seconds or an ISO-8601 date-time") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        value = parsed.timestamp()
    if not math.isfinite(value) or not 0 <= value < 32503680000:  # before the year 3000
        raise BadParam(name, "out of range")
    return value
