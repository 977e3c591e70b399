"""The Flask app factory: blueprints for pages, the JSON API and health; security headers; JSON errors."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from flask import Flask, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from ..config import DashboardConfig, Secret
from ..config.checks import check_dashboard_token
from ..config.serving import reads_need_token
from . import alert_actions, api, auth, health, openapi, pages
from .hosts import allowed_names, host_allowed
from .params import BadParam
from .store import Unavailable
from .throttle import FailureThrottle

log = logging.getLogger(__name__)

# Everything the page needs comes from this server: no inline script or style, no third-party origin.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass(frozen=True)
class DashboardState:
    """What the blueprints need: the view, the settings, the token (empty: changes disabled) and the throttle of
    wrong tokens."""

    view: object
    config: DashboardConfig
    token: str
    throttle: FailureThrottle = field(default_factory=FailureThrottle)

    @property
    def require_token_for_reads(self) -> bool:
        """Asked for (dashboard.require_token_for_reads), or implied by a host beyond loopback."""
        return reads_need_token(self.config)


def _finite(obj):
    """`obj` with every NaN and infinity replaced by None (only walked when the fast path refused it)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


class FiniteJSONProvider(DefaultJSONProvider):
    """Every JSON answer without NaN or Infinity: Python writes them, no browser parses them (one such value
    and the page's whole sensor list stopped rendering). Non-finite numbers become null."""

    sort_keys = False

    def dumps(self, obj, **kwargs) -> str:
        kwargs["allow_nan"] = False
        try:
            return super().dumps(obj, **kwargs)
        except ValueError:  # "Out of range float values are not JSON compliant"
            return super().dumps(_finite(obj), **kwargs)


def _is_api() -> bool:
    return request.path.startswith("/api/") or request.path in ("/health", "/ready", "/metrics")


def create_app(view, config: DashboardConfig, token: Secret | str | None = None) -> Flask:
    """A Flask app over `view` (see view.View); `token` is DASHBOARD_TOKEN."""
    raw_token = token.reveal() if isinstance(token, Secret) else (token or "")
    check_dashboard_token(config, raw_token)
    app = Flask(__name__)
    app.json = FiniteJSONProvider(app)
    app.extensions["dashboard"] = DashboardState(view, config, raw_token)
    hosts = allowed_names(config)

    @app.before_request
    def check_host():
        # First: a rebinding page must learn nothing, not even whether a token is needed.
        if not host_allowed(request.environ.get("HTTP_HOST"), hosts):
            log.debug("event=dashboard_host_refused host=%r path=%s", request.environ.get("HTTP_HOST"), request.path)
            return jsonify(error="unknown Host: add the name to dashboard.allowed_hosts", status=400), 400
        return None

    app.before_request(auth.check_read)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(alert_actions.bp)
    app.register_blueprint(health.bp)
    requests_total = getattr(getattr(view, "metrics", None), "http_requests", None)

    @app.after_request
    def headers(response):
        response.headers.update(SECURITY_HEADERS)
        if _is_api():
            response.headers["Cache-Control"] = "no-store"
        if requests_total is not None:
            # The route template (not the path) keeps the label bounded: /api/sensors/<sensor_id>.
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"
            requests_total.labels(route, str(response.status_code)).inc()
        return response

    @app.errorhandler(BadParam)
    def bad_param(err: BadParam):
        return jsonify(error=str(err), parameter=err.name), 400

    @app.errorhandler(Unavailable)
    def unavailable(err: Unavailable):
        # Debug only: the page polls every second, and the sinks already log the outage once per retry.
        log.debug("event=dashboard_dependency_unavailable dependency=%s path=%s", err.dependency, request.path)
        return jsonify(error=str(err), dependency=err.dependency), 503

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        if _is_api():
            return jsonify(error=err.description, status=err.code), err.code
        return pages.error_page(err.code or 500, err.name, err.description)

    @app.errorhandler(Exception)
    def crash(err: Exception):
        log.exception("event=dashboard_error path=%s", request.path)
        if _is_api():
            return jsonify(error="internal error, see the daemon log", status=500), 500
        return pages.error_page(500, "Internal error", "See the daemon log.")

    return app
