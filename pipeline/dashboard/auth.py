"""The dashboard token (DASHBOARD_TOKEN): always needed to change anything; to read when asked for
(dashboard.require_token_for_reads) or when dashboard.host is not a loopback address. /health and /ready
stay open either way, so systemd, Kubernetes and load balancers can probe without the token.

Reads accept `Authorization: Bearer <token>` or HTTP Basic with the token as password (so a browser can
prompt for it and Prometheus can scrape with `basic_auth` or `authorization`). Changes accept only
Bearer: a browser attaches remembered Basic credentials to any request, even one a foreign page
makes it send, but a Bearer header can only come from our own page's script, which is what keeps a
cross-site form from resolving alerts.
"""
from __future__ import annotations

import base64
import binascii
import functools
import hmac

from flask import current_app, jsonify, request

# Liveness and readiness probes, and the page's own script and styles (nothing in them is data).
OPEN_ENDPOINTS = ("health.health", "health.ready", "static")
REALM = 'Basic realm="pipeline dashboard", charset="UTF-8"'


def presented() -> tuple[str, str] | None:
    """(scheme, token) from the Authorization header, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer" and value.strip():
        return "bearer", value.strip()
    if scheme == "basic" and value.strip():
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return "basic", decoded.partition(":")[2]
    return None


def matches(token: str, schemes: tuple[str, ...]) -> bool:
    got = presented()
    return got is not None and got[0] in schemes and hmac.compare_digest(got[1].encode(), token.encode())


def unauthorized(message: str, challenge: str):
    response = jsonify(error=message)
    response.status_code = 401
    response.headers["WWW-Authenticate"] = challenge
    return response


def may_read() -> bool:
    """Whether this request may see data: reads are open, or it carries the token."""
    state = current_app.extensions["dashboard"]
    return not state.require_token_for_reads or matches(state.token, ("bearer", "basic"))


def check_read():
    """before_request hook: None to go on, or a 401 when reads need the token and it is missing or wrong."""
    if request.endpoint in OPEN_ENDPOINTS or may_read():
        return None
    return unauthorized("this dashboard needs the DASHBOARD_TOKEN (Bearer, or Basic with it as password)", REALM)


def writer(view_fn):
    """Decorator for changing endpoints: 403 when no token is configured, 401 without the right Bearer token."""

    @functools.wraps(view_fn)
    def wrapped(*args, **kwargs):
        state = current_app.extensions["dashboard"]
        if not state.token:
            response = jsonify(error="changes are disabled: DASHBOARD_TOKEN is not set")
            response.status_code = 403
            return response
        if not matches(state.token, ("bearer",)):
            return unauthorized("send the DASHBOARD_TOKEN as 'Authorization: Bearer <token>'", 'Bearer realm="pipeline dashboard"')
        return view_fn(*args, **kwargs)

    return wrapped
