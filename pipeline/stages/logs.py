"""Application log records: decode (topic and JSON) and validate into LogRecord, or raise Invalid.

Contract (docs/sources.md): topic <logs root>/<app>, payload a JSON object
  {"timestamp": ..., "level": "ERROR", "message": "...", "logger": "billing.db", "extra": {...}, "id": "..."}
level and message are required. `id` (optional) is the producer's identity of the record, unique per app: a
record sent again with the same id is stored once (the logship handler sets it). level is one of DEBUG, INFO, WARNING, ERROR, CRITICAL in any case,
plus the aliases WARN and FATAL that Python's logging itself defines; it is stored upper case.
timestamp follows the reading rules (ISO-8601 or epoch seconds; absent means the receive time).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from ..records import Invalid, LogRecord, RawMessage
from ..registry import formats
from ..registry.formats import Limits
from ..runtime.stage import RecordStage
from .decode import json_depth, parse_json
from .validate import check_event_time, check_sensor_id

LOG_FIELDS = frozenset({"timestamp", "level", "message", "logger", "extra", "id"})
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LEVEL_NAMES = {**{name: name for name in LEVELS}, "WARN": "WARNING", "FATAL": "CRITICAL"}
# The app becomes sensor id "app:<app>" for its log counts, and sensor ids hold 50 characters.
APP_MAX = 46
LOGGER_MAX = 200
RECORD_ID_MAX = 100


@dataclass(slots=True)
class LogCandidate:
    """A log payload parsed into a JSON object, not yet validated."""

    app: str
    obj: dict
    source: RawMessage


def decode_log(msg: RawMessage, parts: list[str], max_json_depth: int = 32) -> list[LogCandidate]:
    """The `Decode` route for the logs root: exactly <root>/<app>, a JSON object without unknown fields."""
    if len(parts) != 2 or parts[1] == "":
        raise Invalid("log_topic_invalid", f"topic {msg.mqtt_topic[:120]!r} is not <root>/<app>")
    obj = parse_json(msg.payload, max_json_depth)
    if not isinstance(obj, dict):
        raise Invalid("not_an_object", f"payload is a JSON {type(obj).__name__}, expected an object")
    unknown = obj.keys() - LOG_FIELDS
    if unknown:
        raise Invalid("log_unknown_field", f"unknown field(s): {', '.join(sorted(map(repr, unknown)))[:200]}")
    return [LogCandidate(parts[1], obj, msg)]


def _decode_log_format(msg: RawMessage, levels: dict[str, str], limits: Limits) -> list[LogCandidate]:
    return decode_log(msg, msg.mqtt_topic.split("/"), limits.max_json_depth)


# Everything under the logs root is a log record: a wrong shape there is log_topic_invalid, not a reading.
LOG = formats.register(formats.Format("log", "{logs_root}/#", _decode_log_format, key_level=1,
                                      doc="application log record, <logs.topic_root>/<app>"))


def _has_nul(value: Any) -> bool:
    # PostgreSQL refuses NUL in text and \u0000 in jsonb: refusing it here keeps one record from failing a batch.
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def check_level(level: object) -> str:
    name = LEVEL_NAMES.get(level.upper()) if isinstance(level, str) else None
    if name is None:
        raise Invalid("log_level_invalid", f"level {str(level)[:20]!r} is not one of {', '.join(LEVELS)}")
    return name


class ValidateLog(RecordStage):
    """LogCandidate -> LogRecord. `clock` is injectable so tests pin 'now'."""

    name = "validate_log"
    accepts = LogCandidate

    def __init__(self, max_message_bytes: int, max_future_skew_s: float, max_age_s: float, clock=time.time,
                 max_extra_bytes: int = 8192, max_extra_depth: int = 8):
        self.max_message_bytes = max_message_bytes
        self.max_extra_bytes = max_extra_bytes
        self.max_extra_depth = max_extra_depth
        self.max_future_skew_s = max_future_skew_s
        self.max_age_s = max_age_s
        self.clock = clock

    def process(self, c: LogCandidate) -> list[LogRecord]:
        app = check_sensor_id(c.app, "log_app", APP_MAX)
        obj = c.obj
        missing = [f for f in ("level", "message") if f not in obj]
        if missing:
            raise Invalid("log_missing_field", f"missing {', '.join(missing)}")
        level = check_level(obj["level"])
        message = obj["message"]
        if not isinstance(message, str):
            raise Invalid("log_message_invalid", f"message must be a string, got {type(message).__name__}")
        size = len(message.encode("utf-8"))
        if size > self.max_message_bytes:
            raise Invalid("log_message_too_long", f"{size} bytes > {self.max_message_bytes}")
        if "\x00" in message:
            raise Invalid("log_message_invalid", "message contains a NUL character")
        logger = obj.get("logger")
        if logger is not None and (not isinstance(logger, str) or len(logger) > LOGGER_MAX or not logger.isprintable()):
            raise Invalid("log_logger_invalid", f"logger must be printable text up to {LOGGER_MAX} characters")
        extra = obj.get("extra")
        if extra is None:
            extra = {}
        elif not isinstance(extra, dict):
            raise Invalid("log_extra_invalid", f"extra must be an object, got {type(extra).__name__}")
        else:
            self._check_extra(extra)
        record_id = obj.get("id")
        if record_id is not None and (not isinstance(record_id, str) or not 0 < len(record_id) <= RECORD_ID_MAX
                                      or not record_id.isprintable()):
            raise Invalid("log_id_invalid", f"id must be printable text of 1 to {RECORD_ID_MAX} characters")
        source = c.source
        ts = check_event_time(obj.get("timestamp"), source.received_at, self.clock(), self.max_future_skew_s,
                              self.max_age_s)
        return [LogRecord(app, level, message, logger, extra, ts, source.received_at, source, record_id)]

    def _check_extra(self, extra: dict) -> None:
        """Depth first (the later checks walk it recursively), then the encoded size, then NUL characters:
        PostgreSQL would refuse them one write at a time (jsonb keeps no NUL; deep values fail the batch)."""
        depth = json_depth(extra, self.max_extra_depth)
        if depth > self.max_extra_depth:
            raise Invalid("log_extra_too_deep", f"extra nested deeper than {self.max_extra_depth} levels")
        try:
            size = len(orjson.dumps(extra))
        except (orjson.JSONEncodeError, TypeError) as err:
            raise Invalid("log_extra_invalid", f"extra cannot be encoded: {err}") from None
        if size > self.max_extra_bytes:
            raise Invalid("log_extra_too_large", f"extra is {size} bytes encoded > {self.max_extra_bytes}")
        if _has_nul(extra):
            raise Invalid("log_extra_invalid", "extra contains a NUL character")
