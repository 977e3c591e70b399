"""History files read for `python -m pipeline.tools.import`: lines in bounded batches with their numbers and byte
offsets, each line a reading candidate (or a `BadLine` naming the reason), checked by the live path's own stages.

Formats: CSV with a header line naming the columns `sensor_id,metric,value,timestamp[,unit]` (any order; the
timestamp ISO-8601 or epoch seconds), and InfluxDB line protocol (pipeline/stages/line_protocol.py). A line is at
most MAX_LINE_BYTES; a longer one is a bad line, skipped without being held in memory.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from ..config import Config
from ..config.checks import allowed_metrics
from ..records import Invalid, RawMessage, Reading, metric_name
from ..stages.decode import Candidate
from ..stages.lateness import LateFilter
from ..stages.transform import NormalizeUnits
from ..stages.validate import Validate

MAX_LINE_BYTES = 65536
MAX_BATCH_BYTES = 16 * 1024 * 1024  # a batch of long lines stops here, whatever --batch says
CSV_REQUIRED = ("sensor_id", "metric", "value", "timestamp")
CSV_COLUMNS = CSV_REQUIRED + ("unit",)
_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
# Tags naming the sensor of a line-protocol point, the first present wins; none: the measurement names it.
LP_SENSOR_TAGS = ("sensor_id", "sensor", "device", "host")
LP_MAX_FIELDS = 1000  # fields of one point; more: too_many_readings


@dataclass(frozen=True)
class BadLine:
    """A line that stores nothing: its number, the reason (as dead letters name it) and the detail."""

    lineno: int
    reason: str
    detail: str = ""


@dataclass
class Batch:
    """Lines of a file (number, text) and the byte offset and line number where the batch ends."""

    lines: list[tuple[int, str]]
    end_offset: int
    too_long: list[BadLine]
    end_lineno: int = 0


def read_batches(f: BinaryIO, offset: int, lineno: int, max_lines: int) -> Iterator[Batch]:
    """Lines from `offset` (the line numbered `lineno` + 1 starts there), at most `max_lines` and about
    MAX_BATCH_BYTES per batch."""
    f.seek(offset)
    while True:
        lines: list[tuple[int, str]] = []
        too_long: list[BadLine] = []
        first = offset
        while len(lines) + len(too_long) < max_lines and offset - first < MAX_BATCH_BYTES:
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                break
            offset += len(raw)
            lineno += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # the rest of the long line, in bounded pieces
                    raw = f.readline(MAX_LINE_BYTES)
                    offset += len(raw)
                too_long.append(BadLine(lineno, "line_too_long", f"more than {MAX_LINE_BYTES} bytes"))
                continue
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if text.strip() and not text.lstrip().startswith("#"):
                lines.append((lineno, text))
        if not lines and not too_long:
            return
        yield Batch(lines, offset, too_long, lineno)


def detect_format(first_line: str) -> str:
    """'csv' when the first line is a CSV header naming the required columns, else 'lp' (line protocol)."""
    names = [c.strip().lower() for c in first_line.split(",")]
    return "csv" if all(c in names for c in CSV_REQUIRED) else "lp"


def csv_columns(header: str) -> dict[str, int]:
    """Column name -> index from the header line; raises ValueError naming a missing or unknown column."""
    names = [c.strip().lower() for c in next(csv.reader([header]))]
    missing = [c for c in CSV_REQUIRED if c not in names]
    if missing:
        raise ValueError(f"the CSV header lacks {', '.join(missing)} (expected {','.join(CSV_COLUMNS)})")
    unknown = [c for c in names if c not in CSV_COLUMNS]
    if unknown:
        raise ValueError(f"unknown CSV column(s) {', '.join(unknown)} (expected {','.join(CSV_COLUMNS)})")
    return {name: i for i, name in enumerate(names)}


def _number_or_text(text: str):
    return float(text) if _NUMBER.fullmatch(text) else text


def _timestamp(text: str):
    text = text.strip()
    if not text:
        raise Invalid("timestamp_missing", "an imported reading needs its timestamp")
    return float(text) if _NUMBER.fullmatch(text) else text


def csv_candidates(text: str, columns: dict[str, int], source: RawMessage) -> list[Candidate]:
    """One CSV line -> its candidate (the validate stage checks every field)."""
    try:
        fields = text.split(",") if '"' not in text else next(csv.reader([text]), [])
    except csv.Error as err:  # a Python whose csv module refuses what this one reads
        raise Invalid("csv_invalid", str(err)[:200]) from None
    if len(fields) != len(columns):
        raise Invalid("csv_columns", f"{len(fields)} field(s), the header names {len(columns)}")
    unit_at = columns.get("unit")
    unit = fields[unit_at].strip() or None if unit_at is not None else None
    return [Candidate(fields[columns["sensor_id"]].strip(), fields[columns["metric"]].strip(),
                      _number_or_text(fields[columns["value"]]), _timestamp(fields[columns["timestamp"]]),
                      None, None, unit, source)]


def lp_candidates(text: str, source: RawMessage) -> list[Candidate]:
    """One line-protocol point -> a candidate per numeric field. The sensor is the first of LP_SENSOR_TAGS present,
    else the measurement; a field `value` takes the measurement's name as its metric, any other field its own;
    a `unit` tag is the unit."""
    from ..stages import line_protocol  # written beside the dialects; absent, line-protocol files are refused

    parser_error = getattr(line_protocol, "Invalid", Invalid)
    try:
        point = line_protocol.parse_line(text, max_fields=LP_MAX_FIELDS)
    except Invalid:
        raise  # the parser's own named reason
    except parser_error as err:
        raise Invalid("line_protocol_invalid", str(err)[:200]) from None
    if point is None:  # a comment or a blank line
        return []
    if point.time_ns is None:
        raise Invalid("timestamp_missing", "an imported point needs its timestamp")
    tags = point.tags
    sensor = next((tags[t] for t in LP_SENSOR_TAGS if t in tags), None)
    out = []
    for key, value in point.fields.items():
        if isinstance(value, str) or isinstance(value, bool):
            continue  # strings and booleans are no measurements
        metric = point.measurement if key == "value" else key
        out.append(Candidate(sensor if sensor is not None else point.measurement, metric_name(metric), value,
                             point.time_ns / 1e9, None, None, tags.get("unit"), source))
    if not out:
        raise Invalid("no_numeric_field", "the point has no numeric field")
    return out


class Checker:
    """The live path's validation and unit conversion (stages validate, transform, lateness) for one file;
    `allow_old` lifts the age limit and the lateness filter. With limits.registration `known`, `registered` holds the
    sensors that may write (a reading of another is refused as unknown_sensor, as the live path does)."""

    def __init__(self, cfg: Config, allow_old: bool, clock=None, registered: set[str] | None = None):
        self.registered = registered if cfg.limits.registration == "known" else None
        v = cfg.validation
        kwargs = {"clock": clock} if clock is not None else {}
        self.validate = Validate(v.max_future_skew_s, math.inf if allow_old else v.max_age_s, v.default_type,
                                 v.default_location, allowed_metrics=allowed_metrics(cfg), **kwargs)
        self.units = NormalizeUnits(cfg.units)
        self.late = None if allow_old or not cfg.aggregation.enabled else \
            LateFilter(cfg.aggregation.grace_s, cfg.aggregation.max_lateness_s)

    def check(self, candidates: list[Candidate]) -> list[Reading]:
        out = []
        for c in candidates:
            for r in self.validate.process(c):
                if self.registered is not None and r.sensor_id not in self.registered:
                    raise Invalid("unknown_sensor", f"sensor {r.sensor_id!r} is not registered (limits.registration: "
                                                    "known; add it with python -m pipeline.sensors)")
                for u in self.units.process(r):
                    out.extend(self.late.process(u) if self.late is not None else (u,))
        return out


def parse_batch(batch: Batch, fmt: str, columns: dict[str, int] | None, checker: Checker,
                source: RawMessage) -> tuple[list[Reading], list[BadLine]]:
    """Readings of a batch's good lines, and its bad lines by number (in order)."""
    readings: list[Reading] = []
    bad = list(batch.too_long)
    for lineno, text in batch.lines:
        try:
            cands = csv_candidates(text, columns, source) if fmt == "csv" else lp_candidates(text, source)
            readings.extend(checker.check(cands))
        except Invalid as err:
            bad.append(BadLine(lineno, err.reason, err.detail))
    bad.sort(key=lambda b: b.lineno)
    return readings, bad
