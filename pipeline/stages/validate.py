"""Validate stage: a candidate becomes a Reading, or raises Invalid with a named reason.

Rules (README, "Validation"): sensor id ^[A-Za-z0-9][A-Za-z0-9_.:-]*$ up to 50 characters; metric
^[A-Za-z][A-Za-z0-9_]*$ up to 20; value a finite number (not a boolean, not a string); timestamp an
ISO-8601 date-time or epoch seconds within the configured skew of now; type up to 20 printable
characters; location up to 100. Optionally only the metric names `validation.metrics` allows.
"""
from __future__ import annotations

import math
import re
import time
from datetime import datetime, timezone

from ..records import Invalid, Reading
from ..runtime.stage import RecordStage, Refused
from .decode import Candidate

SENSOR_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]*")
METRIC_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
SENSOR_ID_MAX, METRIC_MAX, TYPE_MAX, LOCATION_MAX = 50, 20, 20, 100
_NOTHING = object()  # no message seen yet: unlike any field a candidate can hold
NAMES_REMEMBERED = 4096  # values of each kind the batch path remembers as valid (then forgets and learns again)


def check_sensor_id(sensor_id: str, field: str = "sensor_id", limit: int = SENSOR_ID_MAX) -> str:
    """The sensor id rule; `field` names the reasons when another name follows it (a log record's app)."""
    if not sensor_id:
        raise Invalid(f"{field}_empty")
    if len(sensor_id) > limit:
        raise Invalid(f"{field}_too_long", f"{len(sensor_id)} characters > {limit}")
    if not SENSOR_ID_RE.fullmatch(sensor_id) or not sensor_id.isascii():
        raise Invalid(f"{field}_invalid", f"{sensor_id[:60]!r} does not match {SENSOR_ID_RE.pattern}")
    return sensor_id


def check_metric(metric: object) -> str:
    if not isinstance(metric, str) or not metric:
        raise Invalid("metric_invalid", f"metric must be a non-empty string, got {type(metric).__name__}")
    if len(metric) > METRIC_MAX:
        raise Invalid("metric_too_long", f"{len(metric)} characters > {METRIC_MAX}")
    if not METRIC_RE.fullmatch(metric) or not metric.isascii():
        raise Invalid("metric_invalid", f"{metric[:40]!r} does not match {METRIC_RE.pattern}")
    return metric


def check_value(value: object) -> float:
    # bool is an int subclass in Python: true/false are not measurements.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid("value_not_number", f"value must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise Invalid("value_not_finite", "value is beyond the range of a double") from None
    if not math.isfinite(number):
        raise Invalid("value_not_finite", f"value {value!r} is not finite")
    return number


def parse_timestamp(raw: object) -> float:
    """ISO-8601 date-time (naive means UTC) or epoch seconds -> epoch seconds."""
    if isinstance(raw, bool):
        raise Invalid("timestamp_invalid", "timestamp must be a date-time string or epoch seconds")
    if isinstance(raw, (int, float)):
        try:
            seconds = float(raw)
        except OverflowError:
            raise Invalid("timestamp_invalid", "timestamp is beyond the range of a double") from None
        if not math.isfinite(seconds):
            raise Invalid("timestamp_invalid", "timestamp is not finite")
        if seconds < 0:
            raise Invalid("timestamp_invalid", f"negative epoch timestamp {raw!r}")
        return seconds
    if isinstance(raw, str):
        if len(raw) > 40 or ("T" not in raw and " " not in raw):
            raise Invalid("timestamp_invalid", f"{raw[:40]!r} is not an ISO-8601 date-time")
        try:
            dt = datetime.fromisoformat(raw)
        except ValueError:
            raise Invalid("timestamp_invalid", f"{raw[:40]!r} is not an ISO-8601 date-time") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        try:
            return dt.timestamp()
        except (OverflowError, OSError, ValueError):
            raise Invalid("timestamp_invalid", f"{raw[:40]!r} is out of range") from None
    raise Invalid("timestamp_invalid", f"timestamp must be a date-time string or epoch seconds, got {type(raw).__name__}")


def check_event_time(raw: object, received_at: float, now: float, max_future_skew_s: float, max_age_s: float) -> float:
    """A record's event time: its own timestamp within the allowed skew of now, or the receive time if it has none."""
    if raw is None:
        return received_at
    ts = parse_timestamp(raw)
    if ts > now + max_future_skew_s:
        raise Invalid("timestamp_in_future", f"{ts - now:.0f} s ahead of now (limit {max_future_skew_s:g} s)")
    if ts < now - max_age_s:
        raise Invalid("timestamp_too_old", f"{now - ts:.0f} s old (limit {max_age_s:g} s)")
    return ts


def _check_text(value: object, field: str, limit: int, pattern: re.Pattern | None = None) -> str:
    if not isinstance(value, str):
        raise Invalid(f"{field}_invalid", f"{field} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise Invalid(f"{field}_too_long", f"{len(value)} characters > {limit}")
    if not value.isprintable() or (pattern is not None and not pattern.fullmatch(value)):
        raise Invalid(f"{field}_invalid", f"{field} {value[:40]!r} has characters that are not allowed")
    return value


class Validate(RecordStage):
    """Candidate -> Reading. `clock` is injectable so tests pin 'now'."""

    name = "validate"
    accepts = Candidate

    def __init__(self, max_future_skew_s: float, max_age_s: float, default_type: str,
                 default_location: str | None, clock=time.time, allowed_metrics: frozenset[str] | None = None):
        self.allowed_metrics = allowed_metrics  # None: any valid name
        self.max_future_skew_s = max_future_skew_s
        self.max_age_s = max_age_s
        self.default_type = default_type
        self.default_location = default_location
        self.clock = clock
        # What the batch path found valid, by value (bounded: _remember): metric names (check_metric and
        # validation.metrics), sensor ids, units, and (type, location) as claimed -> as stored.
        self._metric_names: set[str] = set()
        self._sensor_ids: set[str] = set()
        self._units: set[str] = set()
        self._labels: dict[tuple, tuple] = {}

    def process_batch(self, items: list, refused: Refused) -> list[Reading]:
        """The batch's candidates, the fields of a message checked once: its readings share the sensor id,
        timestamp, type and location objects decoders give them (and mostly the unit), so per reading only the
        metric (names found valid are remembered) and the value are looked at. Refusals and their reasons are
        those of `process`, in its order of checks (sensor id, metric, value, then the rest); a mapping's
        refusals are counted against it as there."""
        out: list[Reading] = []
        append = out.append
        now = self.clock()  # one 'now' for the batch: it is the consumer's moment of reading it
        names = self._metric_names
        # The fields of the last message seen, as claimed (identity is enough: a message's readings share them).
        source = sensor_id = stamp = claimed_type = claimed_loc = claimed_unit = _NOTHING
        sid_err = msg_err = unit_err = None
        ts = received = stype = loc = unit = None
        sound = False  # the message's sensor id, time, type, location and unit all valid
        for c in items:
            if (c.source is not source or c.sensor_id is not sensor_id or c.timestamp is not stamp
                    or c.sensor_type is not claimed_type or c.location is not claimed_loc):
                source, sensor_id, stamp, claimed_type, claimed_loc = (c.source, c.sensor_id, c.timestamp,
                                                                      c.sensor_type, c.location)
                sid_err, msg_err, ts, stype, loc = self._message_fields(c, now)
                received = source.received_at
                claimed_unit = _NOTHING
            if c.unit is not claimed_unit:  # a mapping's unit may differ between the readings of a message
                claimed_unit = c.unit
                unit_err, unit = self._unit_of(claimed_unit)
                sound = sid_err is None and msg_err is None and unit_err is None
            metric, value = c.metric, c.value
            # The common case: a known metric name and a finite float.
            if sound and type(metric) is str and metric in names and type(value) is float and value - value == 0.0:
                append(Reading(sensor_id, stype, loc, metric, value, ts, received, source, unit))
                continue
            err = sid_err
            if err is None:
                try:
                    if type(metric) is not str or metric not in names:
                        self._check_name(metric)
                    if type(value) is not float or value - value != 0.0:
                        value = check_value(value)
                except Invalid as invalid:
                    err = invalid
            if err is None:
                err = msg_err or unit_err
            if err is None:
                append(Reading(sensor_id, stype, loc, metric, value, ts, received, source, unit))
            else:
                refused.add(c, err if c.origin is None else self._mapped(c, err))
        return out

    def _message_fields(self, c: Candidate, now: float) -> tuple:
        """(sensor id refusal, refusal of the time, type or location, ts, type, location) of `c`'s message."""
        sid_err = msg_err = None
        ts = labels = None
        sensor_id = c.sensor_id  # a str from every decoder of ours; a plug-in's other type is checked each time
        if type(sensor_id) is not str or sensor_id not in self._sensor_ids:
            try:
                check_sensor_id(sensor_id)
                self._remember(self._sensor_ids, sensor_id)
            except Invalid as err:
                sid_err = err
        try:
            ts = check_event_time(c.timestamp, c.source.received_at, now, self.max_future_skew_s, self.max_age_s)
            claimed = (c.sensor_type, c.location)
            try:
                labels = self._labels.get(claimed)
            except TypeError:  # a JSON array or object among them: no key, and refused just below
                labels = None
            if labels is None:
                labels = self._check_labels(c)
                self._remember(self._labels, claimed, labels)  # checked: strings or None
        except Invalid as err:
            msg_err = err
        return (sid_err, msg_err, ts, *labels) if labels is not None else (sid_err, msg_err, ts, None, None)

    def _unit_of(self, claimed: object) -> tuple:
        """(refusal, unit as stored) of a claimed unit; units found valid are remembered."""
        if claimed is None:
            return None, None
        if type(claimed) is str and claimed in self._units:
            return None, claimed
        try:
            unit = _check_text(claimed, "unit", TYPE_MAX)
        except Invalid as err:
            return err, None
        self._remember(self._units, unit)
        return None, unit

    def _check_labels(self, c: Candidate) -> tuple:
        """(type, location) of a message, checked."""
        stype = self.default_type if c.sensor_type is None else _check_text(c.sensor_type, "type", TYPE_MAX, TYPE_RE)
        loc = self.default_location if c.location is None else _check_text(c.location, "location", LOCATION_MAX)
        return stype, loc

    @staticmethod
    def _remember(memo, key, value=None) -> None:
        """Remember a name or labels found valid; publishers choose them, so at most NAMES_REMEMBERED."""
        if len(memo) >= NAMES_REMEMBERED:
            memo.clear()
        if isinstance(memo, set):
            memo.add(key)
        else:
            memo[key] = value

    def _check_name(self, metric: object) -> None:
        """check_metric and validation.metrics; a name that passes is remembered (up to NAMES_REMEMBERED)."""
        check_metric(metric)
        if self.allowed_metrics is not None and metric not in self.allowed_metrics:
            raise Invalid("metric_not_allowed", f"metric {metric!r} is not in validation.metrics")
        self._remember(self._metric_names, metric)

    def process(self, c: Candidate) -> list[Reading]:
        if c.origin is None:
            return self._check(c)
        try:
            return self._check(c)
        except Invalid as err:
            raise self._mapped(c, err) from None

    @staticmethod
    def _mapped(c: Candidate, err: Invalid) -> Invalid:
        """A mapping made `c`: its refusal names the mapping and counts against it."""
        detail = f"mapping {c.origin.name}: metric {str(c.metric)[:40]!r}: {err.detail or err.reason}"
        c.origin.refused_reading(err.reason, detail, c.source.mqtt_topic, c.source.payload)
        return Invalid(err.reason, detail)

    def _check(self, c: Candidate) -> list[Reading]:
        sensor_id = check_sensor_id(c.sensor_id)
        metric = check_metric(c.metric)
        if self.allowed_metrics is not None and metric not in self.allowed_metrics:
            raise Invalid("metric_not_allowed", f"metric {metric!r} is not in validation.metrics")
        value = check_value(c.value)
        source = c.source
        ts = check_event_time(c.timestamp, source.received_at, self.clock(), self.max_future_skew_s, self.max_age_s)
        stype = self.default_type if c.sensor_type is None else _check_text(c.sensor_type, "type", TYPE_MAX, TYPE_RE)
        loc = self.default_location if c.location is None else _check_text(c.location, "location", LOCATION_MAX)
        unit = None if c.unit is None else _check_text(c.unit, "unit", TYPE_MAX)
        return [Reading(sensor_id, stype, loc, metric, value, ts, source.received_at, source, unit)]
