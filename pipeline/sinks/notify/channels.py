"""Channel senders: our own signed JSON webhook (http/https URLs) and apprise for the rest (mailto, mailtos,
slack, workflows (Microsoft Teams), tgram, ...). A sender turns a Notice into one message and raises
DeliveryError when it did not arrive; it never logs or raises its URL.

Why our own JSON webhook rather than apprise's json://: receivers get the exact alert payload (apprise
wraps it in its own {title, message, type} document), the body is HMAC-signed, redirects are refused and
the deadline covers the whole delivery (http.py).
"""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone

from ...config import Secret
from .http import SIGNATURE_HEADER, TIMESTAMP_HEADER, DeliveryError, post, sign
from .policy import Notice

log = logging.getLogger(__name__)


def _when(ts) -> str:
    try:
        return datetime.fromtimestamp(float(ts), timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def _line(p: dict) -> str:
    what = " ".join(str(x) for x in (p.get("sensor_id"), p.get("metric"), p.get("type")) if x)
    return f"[{str(p.get('severity', '')).upper()}] {p.get('event')}: {what}: {p.get('message')}"


def render(notice: Notice) -> tuple[str, str, str]:
    """Title, body and apprise notify type (failure, warning, success, info) of a notice."""
    if notice.digest:
        n = notice.count
        worst = "critical" if any(p.get("severity") == "critical" and p.get("event") != "resolved"
                                  for p in notice.alerts) else "warning"
        lines = [_line(p) for p in notice.alerts]  # at most digest.max_listed
        if notice.more:
            lines.append(f"... and {notice.more} more")
        return (f"{n} alert notifications within {notice.window_s:g} s", "\n".join(lines),
                "failure" if worst == "critical" else "warning")
    p = notice.alerts[0]
    what = " ".join(str(x) for x in (p.get("sensor_id"), p.get("metric")) if x)
    title = f"[{str(p.get('severity', '')).upper()}] {p.get('type')} alert {p.get('event')}: {what}"
    body = f"{p.get('message')}\nalert {p.get('alert_id')}, value {p.get('value')}, at {_when(p.get('timestamp'))}"
    kind = "success" if p.get("event") == "resolved" else "failure" if p.get("severity") == "critical" else "warning"
    return title, body, kind


def json_body(notice: Notice) -> dict:
    """What the JSON webhook sends: the alert payload itself, or a digest document listing them."""
    if not notice.digest:
        return notice.alerts[0]
    return {"event": "digest", "count": notice.count, "window_s": notice.window_s, "alerts": notice.alerts,
            "more": notice.more}


class WebhookSender:
    """POSTs the payload as JSON, signed when a key is set; hardened as http.py says."""

    operation = "alert_webhook"

    def __init__(self, name: str, url: Secret, key: Secret, timeout_s: float, clock=time.time):
        self.name, self._url, self._key, self.timeout_s, self.clock = name, url, key, timeout_s, clock

    def send(self, notice: Notice) -> None:
        body = json.dumps(json_body(notice)).encode()
        headers = {}
        if self._key:
            ts = int(self.clock())
            headers = {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(self._key.reveal().encode(), ts, body)}
        post(self._url.reveal(), body, headers, self.timeout_s)


class AppriseSender:
    """One apprise service (email, Slack, Teams workflow, Telegram, ...), redirects off, one overall timeout."""

    operation = "alert_notify"

    def __init__(self, name: str, url: Secret, timeout_s: float):
        import apprise  # only when an apprise channel is configured

        # apprise and urllib3 log each request's URL (tokens included) at DEBUG: never let that reach our logs.
        for noisy in ("apprise", "urllib3"):
            quiet = logging.getLogger(noisy)
            if quiet.getEffectiveLevel() < logging.INFO:
                quiet.setLevel(logging.INFO)
        self.name, self.timeout_s = name, timeout_s
        self._types = {"failure": apprise.NotifyType.FAILURE, "warning": apprise.NotifyType.WARNING,
                       "success": apprise.NotifyType.SUCCESS, "info": apprise.NotifyType.INFO}
        self._text = apprise.NotifyFormat.TEXT  # plain text: apprise escapes it for HTML services (Telegram)
        self._apprise = apprise.Apprise(asset=apprise.AppriseAsset(http_redirects=False))
        if not self._apprise.add(url.reveal()):
            raise ValueError(f"channel {name}: apprise does not accept this URL (scheme or fields)")

    def send(self, notice: Notice) -> None:
        title, body, kind = render(notice)
        result = self._apprise.notify(body=body, title=title, notify_type=self._types[kind],
                                      body_format=self._text, timeout=self.timeout_s)
        if not result:
            raise DeliveryError(f"apprise: {getattr(getattr(result, 'status', None), 'name', 'failed')}", transient=True)


def build_sender(name: str, url: Secret, key: Secret, timeout_s: float):
    """http(s) URLs: our JSON webhook; anything else goes to apprise."""
    if url.reveal().split("://", 1)[0].lower() in ("http", "https"):
        return WebhookSender(name, url, key, timeout_s)
    return AppriseSender(name, url, timeout_s)
