"""The HTML pages: the live dashboard and the alerts page. Data is escaped by Jinja on the server and
inserted with textContent in the browser, never as markup."""
from __future__ import annotations

from datetime import datetime, timezone

from flask import Blueprint, current_app, render_template, request

from .. import __version__
from . import params
from .api import SENSOR_ID_MAX, SEVERITY_RE

bp = Blueprint("pages", __name__)
UNRESOLVED_STATES = ("open", "acknowledged", "snoozed", "flapping")


def _common() -> dict:
    state = current_app.extensions["dashboard"]
    return {"token_configured": bool(state.token), "reads_need_token": state.require_token_for_reads,
            "version": __version__}


@bp.get("/")
def index():
    """The live dashboard: throughput and latency, health, errors, sensors, alerts."""
    return render_template("index.html", **_common())


@bp.get("/alerts")
def alerts():
    """Unresolved alerts (most severe, newest first; `state` narrows them) with acknowledge, snooze and
    resolve buttons, the snoozes in force, and the resolved history."""
    a = request.args
    severity = params.text(a, "severity", 10, SEVERITY_RE)
    sensor_id = params.text(a, "sensor_id", SENSOR_ID_MAX)
    limit = params.integer(a, "limit", 100, 1, 1000)
    state = params.choice(a, "state", UNRESOLVED_STATES, "") or None
    view = current_app.extensions["dashboard"].view
    if state is None:
        open_alerts = view.alerts("open", severity, sensor_id, limit)
    else:
        open_alerts = view.alerts("open", severity, sensor_id, limit, state=state)
    resolved = view.alerts("resolved", severity, sensor_id, limit)
    return render_template("alerts.html", open_alerts=open_alerts, resolved=resolved, severity=severity or "",
                           sensor_id=sensor_id or "", limit=limit, state=state or "", states=UNRESOLVED_STATES,
                           snoozes=view.snoozes(100), **_common())


def error_page(code: int, name: str, description: str | None):
    """An HTML error page (API paths answer JSON instead, see app.py)."""
    return render_template("error.html", code=code, name=name, description=description or "", **_common()), code


@bp.app_template_filter("utc")
def utc(ts: float | None) -> str:
    """Epoch seconds -> '2025-10-09 08:53:20 UTC' ('' for none)."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
