"""One hardened HTTP POST for alert webhooks, and the HMAC signature a receiver verifies.

- Redirects are never followed: a 3xx is a failure (a POST must not turn into a GET to another host).
- One deadline for the whole delivery (connect, send, read): a watchdog shuts the socket down when it
  passes, so a server dripping its answer a byte at a time cannot hold the thread past it.
- The body is signed: `X-Pipeline-Timestamp: <unix seconds>` and
  `X-Pipeline-Signature: sha256=<hex HMAC-SHA256 over "<timestamp>." + body>` (key: ALERT_WEBHOOK_SECRET).
  Binding the timestamp into the signature lets a receiver refuse replays (docs/operations.md).
"""
from __future__ import annotations

import hashlib
import hmac
import http.client
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

SIGNATURE_HEADER = "X-Pipeline-Signature"
TIMESTAMP_HEADER = "X-Pipeline-Timestamp"
_MAX_ANSWER = 64 * 1024  # bytes of the answer read at most: only its status matters


class DeliveryError(Exception):
    """A delivery failed; `transient` says whether trying again may help. The text never holds the URL."""

    def __init__(self, text: str, transient: bool):
        super().__init__(text)
        self.transient = transient


def sign(key: bytes, timestamp: int, body: bytes) -> str:
    """The X-Pipeline-Signature value for `body` sent at `timestamp`."""
    return "sha256=" + hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(key: bytes, timestamp: str, signature: str, body: bytes, now: float, tolerance_s: float = 300.0) -> bool:
    """What a receiver does: the signature matches the exact body and the timestamp is recent."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs(now - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(key, ts, body), signature or "")


def post(url: str, body: bytes, headers: dict[str, str], deadline_s: float) -> int:
    """POST `body`; the 2xx status, or DeliveryError. Never longer than `deadline_s` in all."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryError("not an http(s) URL", transient=False)
    started = time.monotonic()
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=deadline_s,
                                                                       context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=deadline_s)
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    watchdog = threading.Timer(deadline_s, cut)
    watchdog.daemon = True
    watchdog.start()
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json",
                                                        "User-Agent": "realtime-pipeline", **headers})
        resp = conn.getresponse()
        resp.read(_MAX_ANSWER)
        status = resp.status
    except (OSError, http.client.HTTPException) as err:
        if expired.is_set() or time.monotonic() - started >= deadline_s:
            raise DeliveryError(f"deadline of {deadline_s:g} s passed", transient=True) from None
        raise DeliveryError(f"{type(err).__name__}", transient=True) from None
    finally:
        watchdog.cancel()
        conn.close()
    if expired.is_set():
        raise DeliveryError(f"deadline of {deadline_s:g} s passed", transient=True)
    if 300 <= status < 400:
        raise DeliveryError(f"HTTP {status}: redirect not followed", transient=False)
    if status == 429 or status >= 500:
        raise DeliveryError(f"HTTP {status}", transient=True)
    if status >= 400:
        raise DeliveryError(f"HTTP {status}", transient=False)
    return status
