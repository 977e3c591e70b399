"""Liveness, readiness and the Prometheus scrape endpoint."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST

from .auth import may_read

bp = Blueprint("health", __name__)


def _view():
    return current_app.extensions["dashboard"].view


@bp.get("/health")
def health():
    """Liveness: the process answers and every worker thread is alive (503 naming the dead ones). Open to probes
    without the token; without it, when reads need it, only `status` (thread names and crash text stay inside)."""
    ok, body = _view().health()
    if not may_read():
        body = {"status": body.get("status", "ok" if ok else "failing")}
    return jsonify(body), 200 if ok else 503


@bp.get("/ready")
def ready():
    """Readiness per dependency: 200, or 503 with `failing` and `problems` naming what is wrong. Open to
    probes without the token; without it, when reads need it, only `ready` and `failing` (the problems name
    hosts and errors)."""
    ok, body = _view().ready()
    if not may_read():
        body = {"ready": body.get("ready", ok), "failing": body.get("failing", [])}
    return jsonify(body), 200 if ok else 503


@bp.get("/metrics")
def metrics():
    """Prometheus text exposition of the pipeline's registry."""
    return Response(_view().metrics_text(), mimetype=None, content_type=CONTENT_TYPE_LATEST)
