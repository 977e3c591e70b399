"""One sensor's metric over a time range at the resolution that suits it (`GET /api/series`).

The resolutions are the raw readings (`measurements`) and each configured `aggregation.periods` row of
`aggregations`. The answer uses the coarsest one that gives at least the points asked for over the range, among
those whose retention still holds the range's start; when none gives that many, the finest one that holds it
(raw readings first). The work is bounded: at most MAX_POINTS rows are read, and the answer says when more were
there (`truncated`).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass

RAW = "raw"
MAX_POINTS = 10_000
AGG_SERIES = ("SELECT extract(epoch FROM timestamp)::float8, avg_value, min_value, max_value, count FROM aggregations "
              "WHERE sensor_id = %s AND metric = %s AND period = %s AND timestamp >= %s AND timestamp < %s "
              "ORDER BY timestamp LIMIT %s")
RAW_SERIES = ("SELECT extract(epoch FROM timestamp)::float8, value FROM measurements "
              "WHERE sensor_id = %s AND metric = %s AND timestamp >= %s AND timestamp < %s ORDER BY timestamp LIMIT %s")
AGG_FIELDS = ("t", "avg", "min", "max", "count")
RAW_FIELDS = ("t", "value")


@dataclass(frozen=True)
class Resolution:
    """A stored resolution: its label (`raw` or a period), its step in seconds (0 for raw) and how many days
    retention keeps it (0: forever)."""

    label: str
    step_s: int
    kept_days: float


def resolutions(periods: dict[str, int], raw_days: float, period_days: dict[str, float]) -> list[Resolution]:
    """Raw first, then the periods, finest to coarsest."""
    out = [Resolution(RAW, 0, raw_days)]
    out += [Resolution(p, s, period_days.get(p, 0.0)) for p, s in sorted(periods.items(), key=lambda x: x[1])]
    return out


def choose(options: list[Resolution], start: float, end: float, points: int, now: float) -> Resolution:
    """The coarsest resolution giving at least `points` over [start, end) that retention keeps at `start`; if none
    gives that many, the finest kept one; if retention dropped them all there, the coarsest."""
    kept = [r for r in options if r.kept_days <= 0 or start >= now - r.kept_days * 86400]
    enough = [r for r in kept if r.step_s and (end - start) / r.step_s >= points]
    if enough:
        return enough[-1]
    if kept:
        return kept[0]
    return options[-1]


def shape(resolution: str, rows: list[tuple]) -> list[dict]:
    """Rows of the query -> points: {t, value} for raw readings, {t, avg, min, max, count} for a period."""
    fields = RAW_FIELDS if resolution == RAW else AGG_FIELDS
    return [dict(zip(fields, row)) for row in rows]


def to_csv(answer: dict) -> str:
    """The points as CSV with a header line; numbers as Python's shortest round-trip form (repr), empty for null."""
    fields = RAW_FIELDS if answer["resolution"] == RAW else AGG_FIELDS
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(fields)
    for p in answer["points"]:
        w.writerow(["" if p[f] is None else repr(p[f]) for f in fields])
    return buf.getvalue()
