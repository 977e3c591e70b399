"""The JSON API of the operator's workflow: acknowledge, snooze (an alert, a sensor, a rule), unsnooze, and
the snoozes in force. Every change needs the DASHBOARD_TOKEN (auth.writer) and names who makes it; each is
one `alert_events` row with who and the note (workflow.py)."""
from __future__ import annotations

import re

from flask import Blueprint, current_app, jsonify, request

from ..stages.validate import METRIC_MAX, METRIC_RE
from . import params
from .auth import writer

bp = Blueprint("alert_actions", __name__, url_prefix="/api")

SENSOR_ID_MAX = 50
TYPE_RE = re.compile(r"[a-z_]{1,20}")  # alerts.type is VARCHAR(20): threshold, rate, outlier, stuck, offline...
WHO_MAX, NOTE_MAX = 100, 1000
MAX_SNOOZE_S = 90 * 86400
STATUS = {"not_found": 404, "already_resolved": 409, "already_acknowledged": 409, "already_ended": 409}


def _view():
    return current_app.extensions["dashboard"].view


def _body() -> dict:
    body = request.get_json(silent=True)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise params.BadParam("body", "expected a JSON object")
    return body


def _text(body: dict, name: str, max_len: int, pattern: re.Pattern | None = None, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise params.BadParam(name, "required")
        return None
    if not isinstance(value, str):
        raise params.BadParam(name, "expected a string")
    return params.check_text(value.strip() if name == "who" else value, name, max_len, pattern)


def _who_note(body: dict) -> tuple[str, str]:
    who = _text(body, "who", WHO_MAX, required=True)
    if not who:
        raise params.BadParam("who", "required")
    return who, _text(body, "note", NOTE_MAX) or ""


def _duration(body: dict) -> float:
    value = body.get("duration_s")
    if value is None:
        raise params.BadParam("duration_s", "required")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= MAX_SNOOZE_S:
        raise params.BadParam("duration_s", f"expected a number of seconds from 1 to {MAX_SNOOZE_S}")
    return float(value)


def _answer(outcome: str, key: str, row: dict | None, what: str):
    if outcome in STATUS:
        message = what if outcome == "not_found" else f"{what}: {outcome.replace('_', ' ')}"
        return jsonify(error=message, status=STATUS[outcome], **{key: row}), STATUS[outcome]
    return jsonify(**{key: row})


@bp.post("/alerts/<alert_id>/ack")
@writer
def acknowledge(alert_id: str):
    """Acknowledge an open alert ({who, note}): 200, 404, or 409 (resolved, or acknowledged already)."""
    ident = params.to_int(alert_id, "id", 1, params.MAX_INT64)
    who, note = _who_note(_body())
    outcome, alert = _view().acknowledge_alert(ident, who, note)
    return _answer(outcome, "alert", alert, f"alert {ident}" if outcome != "not_found" else f"no alert {ident}")


@bp.post("/alerts/<alert_id>/snooze")
@writer
def snooze_alert(alert_id: str):
    """Snooze one open alert ({duration_s, who, note}): 200 with the snooze, 404, or 409 (resolved)."""
    ident = params.to_int(alert_id, "id", 1, params.MAX_INT64)
    body = _body()
    duration = _duration(body)
    who, note = _who_note(body)
    outcome, row = _view().snooze_alert(ident, duration, who, note)
    return _answer(outcome, "snooze" if outcome == "snoozed" else "alert", row,
                   f"alert {ident}" if outcome != "not_found" else f"no alert {ident}")


@bp.post("/snoozes")
@writer
def snooze():
    """Snooze every alert of a sensor and/or a rule ({sensor_id, rule: {metric, type}, duration_s, who, note})."""
    body = _body()
    sensor_id = _text(body, "sensor_id", SENSOR_ID_MAX)
    rule = body.get("rule") or {}
    if not isinstance(rule, dict):
        raise params.BadParam("rule", "expected an object {metric, type}")
    metric = _text(rule, "metric", METRIC_MAX, METRIC_RE)
    type_ = _text(rule, "type", 20, TYPE_RE)
    if sensor_id is None and metric is None and type_ is None:
        raise params.BadParam("sensor_id", "give a sensor_id and/or a rule {metric, type}")
    duration = _duration(body)
    who, note = _who_note(body)
    return jsonify(snooze=_view().snooze(sensor_id, metric, type_, duration, who, note)), 201


@bp.delete("/snoozes/<snooze_id>")
@writer
def unsnooze(snooze_id: str):
    """End a snooze now ({who, note}): 200, 404, or 409 (ended or expired already)."""
    ident = params.to_int(snooze_id, "id", 1, params.MAX_INT64)
    who, note = _who_note(_body())
    outcome, row = _view().unsnooze(ident, who, note)
    return _answer(outcome, "snooze", row, f"snooze {ident}" if outcome != "not_found" else f"no snooze {ident}")


@bp.get("/snoozes")
def snoozes():
    """The snoozes in force, ending soonest first."""
    limit = params.integer(request.args, "limit", 200, 1, 1000)
    items = _view().snoozes(limit)
    return jsonify({"count": len(items), "snoozes": items})
