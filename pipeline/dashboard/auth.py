"""The dashboard token (DASHBOARD_TOKEN): always needed to change anything; to read when asked for
(dashboard.require_token_for_reads) or when dashboard.host is not a loopback address. /health and /ready
stay open either way, so systemd, Kubernetes and load balancers can probe without the token.

Reads accept `Authorization: Bearer <token>` or HTTP Basic with the token as password (so a browser can
prompt for it and Prometheus can scrape with `basic_auth` or `authorization`). Changes accept only
Bearer: a browser attaches remembered Basic credentials to any request, even one a foreign page
makes it send, but a Bearer header can only come from our own page's script, which is what keeps a
cross-site form from resolving alerts.

Wrong tokens are throttled per client address (throttle.py): past the burst, every request of that address
that needs the token gets 429 with Retry-After, the right token included, until its bucket refills. A request
without any token is not an attempt and is not counted. Behind a reverse proxy every client shares the
proxy's address: put the proxy's own rate limit in front.
"""
from __future__ import annotations

import base64
import binascii
import functools
import hmac
import logging
import math

from flask import current_app, jsonify, request

log = logging.getLogger(__name__)

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


def attempt(schemes: tuple[str, ...]) -> float | None:
    """None when the request carries the token; else seconds to wait (0: not throttled, just wrong or missing).
    A wrong token counts against the client's address; a throttled address is not even compared."""
    state = current_app.extensions["dashboard"]
    address = request.remote_addr or "-"
    wait = state.throttle.retry_after(address)
    if wait > 0:
        return wait
    if matches(state.token, schemes):
        return None
    got = presented()
    if got is not None and got[0] in schemes:  # a guess; remembered Basic on a change is not one
        wait = state.throttle.failed(address)
        if wait > 0:
            log.warning("event=dashboard_auth_throttled client=%s retry_after_s=%d", address, math.ceil(wait))
    return 0.0


def too_many(wait: float):
    response = jsonify(error="too many wrong tokens from this address: try again later")
    response.status_code = 429
    response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
    return response


def may_read() -> bool:
    """Whether this request may see data: reads are open, or it carries the token."""
    state = current_app.extensions["dashboard"]
    return not state.require_token_for_reads or attempt(("bearer", "basic")) is None


def check_read():
    """before_request hook: None to go on; 401 when reads need the token and it is missing or wrong; 429 when
    this address got it wrong too often."""
    state = current_app.extensions["dashboard"]
    if request.endpoint in OPEN_ENDPOINTS or not state.require_token_for_reads:
        return None
    wait = attempt(("bearer", "basic"))
    if wait is None:
        return None
    if wait > 0:
        return too_many(wait)
    return unauthorized("this dashboard needs the DASHBOARD_TOKEN (Bearer, or Basic with it as password)", REALM)


def writer(view_fn):
    """Decorator for changing endpoints: 403 when no token is configured, 401 without the right Bearer token, 429
    when this address got it wrong too often."""

    @functools.wraps(view_fn)
    def wrapped(*args, **kwargs):
        state = current_app.extensions["dashboard"]
        if not state.token:
            response = jsonify(error="changes are disabled: DASHBOARD_TOKEN is not set")
            response.status_code = 403
            return response
        wait = attempt(("bearer",))
        if wait:
            return too_many(wait)
        if wait is not None:
            return unauthorized("send the DASHBOARD_TOKEN as 'Authorization: Bearer <token>'", 'Bearer realm="pipeline dashboard"')
        return view_fn(*args, **kwargs)

    return wrapped
