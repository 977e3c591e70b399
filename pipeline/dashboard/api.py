"""The JSON API: sensors and their history, alerts (and resolving one), the pipeline's live numbers."""
from __future__ import annotations

import re
import time

from flask import Blueprint, Response, current_app, jsonify, request

from ..stages.validate import METRIC_MAX, METRIC_RE
from . import params
from .auth import writer
from .series import MAX_POINTS as SERIES_MAX_POINTS
from .series import to_csv
from .store import PERIODS

bp = Blueprint("api", __name__, url_prefix="/api")

SENSOR_ID_MAX = 50  # sensors.sensor_id is VARCHAR(50); any characters, since every query is parameterised
SEVERITY_RE = re.compile(r"[A-Za-z_]{1,10}")
DEFAULT_SPAN_S = {"1m": 3600, "5m": 6 * 3600, "1h": 7 * 86400, "1d": 365 * 86400}
MAX_POINTS = 5000
ALERT_STATES = ("open", "acknowledged", "snoozed", "flapping", "resolved")


def _view():
    return current_app.extensions["dashboard"].view


def _sensor_id(value: str) -> str:
    return params.check_text(value, "sensor_id", SENSOR_ID_MAX)


@bp.get("/sensors")
def sensors():
    """Sensors with their latest values (Redis), filtered by `q`; `spark=<minutes>` adds small trends."""
    a = request.args
    q = params.text(a, "q", 100)
    limit = params.integer(a, "limit", 200, 1, 1000)
    offset = params.integer(a, "offset", 0, 0, 1_000_000)
    spark = params.integer(a, "spark", 0, 0, 120)
    return jsonify(_view().sensors(q, limit, offset, spark))


@bp.get("/sensors/<sensor_id>")
def sensor(sensor_id: str):
    """One sensor: latest values, registration and open alerts; 404 if unknown."""
    found = _view().sensor(_sensor_id(sensor_id))
    if found is None:
        return jsonify(error=f"no sensor {sensor_id!r}", status=404), 404
    return jsonify(found)


@bp.get("/sensors/<sensor_id>/trend")
def trend(sensor_id: str):
    """avg/min/max per period over [from, to): from `aggregations`, or `measurements` over short ranges."""
    a = request.args
    sid = _sensor_id(sensor_id)
    metric = params.text(a, "metric", METRIC_MAX, METRIC_RE, required=True)
    period = params.choice(a, "period", tuple(PERIODS), "1m")
    end = params.timestamp(a, "to")
    if end is None:
        end = time.time()
    start = params.timestamp(a, "from")
    if start is None:
        start = end - DEFAULT_SPAN_S[period]
    if start >= end:
        raise params.BadParam("from", "must be before `to`")
    if (end - start) / PERIODS[period] > MAX_POINTS:
        raise params.BadParam("from", f"range too long for period {period} (at most {MAX_POINTS} points)")
    return jsonify(_view().trend(sid, metric, period, start, end))  # type: ignore[arg-type]


@bp.get("/series")
def series():
    """One sensor's metric over [from, to) at the coarsest stored resolution giving at least `points` points (raw
    readings or an `aggregations` period; pipeline/dashboard/series.py), as JSON or, with format=csv, CSV."""
    a = request.args
    sid = params.text(a, "sensor", SENSOR_ID_MAX, required=True)
    metric = params.text(a, "metric", METRIC_MAX, METRIC_RE, required=True)
    points = params.integer(a, "points", 300, 1, SERIES_MAX_POINTS)
    fmt = params.choice(a, "format", ("json", "csv"), "json")
    end = params.timestamp(a, "to")
    if end is None:
        end = time.time()
    start = params.timestamp(a, "from")
    if start is None:
        start = end - 86400
    if start >= end:
        raise params.BadParam("from", "must be before `to`")
    answer = _view().series(sid, metric, start, end, points)  # type: ignore[arg-type]
    if fmt == "csv":
        return Response(to_csv(answer), mimetype="text/csv",
                        headers={"X-Resolution": answer["resolution"], "X-Truncated": str(answer["truncated"]).lower()})
    return jsonify(answer)


@bp.get("/alerts")
def alerts():
    """Alerts by status (open, resolved, all) or state (open: neither acknowledged nor snoozed, acknowledged,
    snoozed, flapping, resolved), severity and sensor; unresolved ones most severe and newest first."""
    a = request.args
    status = params.choice(a, "status", ("open", "resolved", "all"), "open")
    state = params.choice(a, "state", ALERT_STATES, "") or None
    severity = params.text(a, "severity", 10, SEVERITY_RE)
    sensor_id = params.text(a, "sensor_id", SENSOR_ID_MAX)
    limit = params.integer(a, "limit", 100, 1, 1000)
    if state is None:
        items = _view().alerts(status, severity, sensor_id, limit)
    else:
        items = _view().alerts(status, severity, sensor_id, limit, state=state)
    return jsonify({"status": status, "state": state, "count": len(items), "alerts": items})


@bp.post("/alerts/<alert_id>/resolve")
@writer
def resolve(alert_id: str):
    """Resolve an alert by hand: 200, 404 (unknown id) or 409 (already resolved)."""
    ident = params.to_int(alert_id, "id", 1, params.MAX_INT64)
    outcome, alert = _view().resolve_alert(ident)
    if outcome == "not_found":
        return jsonify(error=f"no alert {ident}", status=404), 404
    if outcome == "already_resolved":
        return jsonify(error=f"alert {ident} is already resolved", status=409, alert=alert), 409
    return jsonify(alert=alert)


@bp.get("/pipeline")
def pipeline():
    """Throughput per stage, latency, queues, consumer lag, dead letters by reason, recent errors, uptime;
    `history=<seconds>` adds the per-second points the live charts start from."""
    a = request.args
    history = params.integer(a, "history", 0, 0, 3600)
    errors = params.integer(a, "errors", 20, 0, 200)
    return jsonify(_view().pipeline(history, errors))


@bp.get("/mappings")
def mappings():
    """Per configured mapping (config `sources:`): messages, their rate, readings per message, text values
    skipped, topics ignored, messages refused and the last refused sample with its reason."""
    return jsonify(_view().mappings())
