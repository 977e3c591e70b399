"""The data contracts that travel between threads: a raw message, a reading, a log record, a dead letter."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import msgspec
import orjson

# Sensor types of the readings the pipeline makes itself: reserved, a device may not claim them.
BROKER_SENSOR_TYPE = "broker"  # the MQTT broker's drop counters (ingest/broker_stats.py)
KAFKA_SENSOR_TYPE = "kafka"  # records missing for good (ingest/continuity.py)
APP_SENSOR_TYPE = "app"  # counts of application logs (operators/logcounts)


@dataclass(slots=True)
class RawMessage:
    """One MQTT message as it came out of Kafka: payload untouched, plus where it was read from."""

    mqtt_topic: str
    payload: bytes
    received_at: float  # epoch seconds, when the MQTT thread received it
    key: bytes | None = None
    topic: str = ""  # Kafka position, for dead letters and replay
    partition: int = -1
    offset: int = -1
    original_size: int = 0  # set when the bridge truncated an oversized payload


class Reading(msgspec.Struct, gc=False):
    """One validated, flat reading: the unit every sink writes.

    A msgspec Struct, not a dataclass, because one is built per reading: built in C (about 0.1 µs against
    0.25 µs for a slotted dataclass's __init__) and not tracked by the garbage collector (gc=False), so a
    batch's readings trigger no collections and are not traversed by them. Untracked is safe because a reading
    is never part of a reference cycle: its fields hold text, numbers, None and its RawMessage, none of which
    refers back to it (a field set to anything that could would leak with its cycle). Used as a dataclass was:
    positional or keyword arguments, mutable fields, equality by fields."""

    sensor_id: str
    sensor_type: str
    location: str | None
    metric: str
    value: float
    ts: float  # event time, epoch seconds UTC
    received_at: float
    source: RawMessage | None = None
    unit: str | None = None  # as sent; the transform stage converts to the metric's canonical unit

    @property
    def reading_id(self) -> str:
        """Identity used to drop duplicates downstream: sensor, metric and event time (µs)."""
        return f"{self.sensor_id}|{self.metric}|{round(self.ts * 1_000_000)}"


@dataclass(slots=True)
class LogRecord:
    """One validated application log record (MQTT topic <logs root>/<app>): what the log sink writes."""

    app: str
    level: str  # DEBUG, INFO, WARNING, ERROR or CRITICAL
    message: str
    logger: str | None
    extra: dict
    ts: float  # event time, epoch seconds UTC
    received_at: float
    source: RawMessage | None = None
    record_id: str | None = None  # the producer's own id of the record (payload field `id`), if it gave one


@dataclass(slots=True)
class SensorOffline:
    """A sensor that said it is gone (a Sparkplug B death certificate): offline now, not after a silence. It
    travels with the batch's readings to the alert operator; the sensor's next reading brings it back."""

    sensor_id: str
    ts: float  # when it was declared gone, epoch seconds
    reason: str  # what said so, for the alert's message (e.g. "NDEATH")
    source: RawMessage | None = None


class Invalid(Exception):
    """Raised by a stage for bad input; `reason` is a short stable name used in metrics and DLQ headers."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# Reason classes decide the dead-letter topic and the retry policy.
INVALID = "invalid"
FAILED = "processing_failure"
EXHAUSTED = "retry_exhausted"


@dataclass(slots=True)
class DeadLetter:
    """A record the pipeline could not handle, with why and where it came from."""

    source: RawMessage
    reason: str
    stage: str
    error: str
    kind: str = INVALID
    attempts: int = 1
    metric: str | None = None
    first_failure_at: float = field(default_factory=time.time)
    # Every refused reading of the message, {metric: reason}, in the order refused: one letter per message
    # however many of its readings were refused (`reason` is then the most common of them).
    refused: dict[str, str] = field(default_factory=dict)

    def headers(self) -> list[tuple[str, bytes]]:
        src = self.source
        items = [
            ("reason", self.reason),
            ("kind", self.kind),
            ("stage", self.stage),
            ("error", self.error[:1000]),
            ("attempts", str(self.attempts)),
            ("mqtt_topic", src.mqtt_topic),
            ("source_topic", src.topic),
            ("source_partition", str(src.partition)),
            ("source_offset", str(src.offset)),
            ("received_at", repr(src.received_at)),
            ("first_failure_at", repr(self.first_failure_at)),
        ]
        if self.metric:
            items.append(("metric", self.metric))
        if self.refused:
            items.append(("metrics", ",".join(self.refused)))
            items.append(("reasons", orjson.dumps(self.refused).decode()))
        return [(k, v.encode("utf-8", "replace")) for k, v in items]


# Names as devices write them ("BME280.Temperature", "Living Room/Plug 2", "ActivePower") become the pipeline's
# names by one rule, the same for every dialect (storage, Redis, dashboard, alerts all see the result):
# - a metric: camelCase split into words, letters lowercased, every run of other characters one "_", no "_" at
#   either end, and "m_" before a leading digit: "BME280.Temperature" -> "bme280_temperature",
#   "ActivePower" -> "active_power", "linkquality" -> "linkquality", "PM2.5" -> "pm2_5".
# - a sensor id: case kept, every run of characters outside [A-Za-z0-9_.:-] one "_", and nothing but a letter or
#   digit first: "Living Room/Plug 2" -> "Living_Room_Plug_2", "a4:c1:38:01" stays.
# A name still too long after this (metric 20, sensor id 50: the columns' widths) is refused by validation with
# its reason; a mapping's `rename` gives it a shorter one.
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z][a-z])|(?<=[a-z])(?=[A-Z])")
_NOT_METRIC = re.compile(r"[^a-z0-9]+")
_NOT_SENSOR = re.compile(r"[^A-Za-z0-9_.:\-]+")
_SENSOR_LEAD = re.compile(r"^[^A-Za-z0-9]+")


def metric_name(raw: str) -> str:
    """A device's metric name as the pipeline stores it (the rule above)."""
    name = _NOT_METRIC.sub("_", _CAMEL.sub("_", raw).lower()).strip("_")
    return "m_" + name if name[:1].isdigit() else name


def sensor_name(raw: str) -> str:
    """A device's name as the pipeline's sensor id (the rule above)."""
    return _SENSOR_LEAD.sub("", _NOT_SENSOR.sub("_", raw))
