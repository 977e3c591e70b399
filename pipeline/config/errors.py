"""ConfigError, and msgspec's validation text rephrased as "key: message" so every error names its key."""
from __future__ import annotations

import msgspec


class ConfigError(Exception):
    """A configuration problem; the message names the key and what was expected."""


def describe_validation_error(err: msgspec.ValidationError) -> str:
    """msgspec's "message - at `$.a.b`" as "a.b: message"; an unknown field becomes "a.b.field: unknown key"."""
    text = str(err)
    message, sep, where = text.rpartition(" - at `")
    if not sep:
        message, where = text, "$"
    if where.startswith("key` in `"):  # a mapping's key is wrong, e.g. an aggregation period label
        where, message = where.removeprefix("key` in `"), f"invalid key: {message}"
    key = where.rstrip("`").removeprefix("$").lstrip(".").replace("[...]", "")
    if message.startswith("Object contains unknown field"):
        field = message.split("`")[1]
        full = f"{key}.{field}" if key else field
        return f"{full}: unknown key"
    return f"{key}: {message}"
