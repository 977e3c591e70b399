"""Alert webhook: transitions POSTed as JSON from a thread of their own, never blocking the pipeline.

A bounded queue sits between the alert evaluator and the HTTP client: when it is full a delivery is
dropped and counted. Each delivery is retried with backoff (network errors, timeouts, HTTP 429 and 5xx)
for `max_elapsed_s`, then counted as failed. Other HTTP errors (4xx) fail at once: retrying cannot help.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request

from ..config import RetryConfig, WebhookConfig
from ..observability.metrics import Metrics
from ..runtime.retry import RetryExhausted, Stopped, retry_call
from ..runtime.supervisor import Spawn, plain_thread

log = logging.getLogger(__name__)


class HttpStatus(Exception):
    """The endpoint answered with an error status."""

    def __init__(self, status: int):
        super().__init__(f"HTTP {status}")
        self.status = status


def _transient(err: BaseException) -> bool:
    if isinstance(err, HttpStatus):
        return err.status == 429 or err.status >= 500
    return isinstance(err, (urllib.error.URLError, TimeoutError, ConnectionError, OSError))


class WebhookNotifier:
    """`offer(payload)` from any thread; one thread (started through `spawn`) delivers in order."""

    def __init__(self, cfg: WebhookConfig, retry: RetryConfig, metrics: Metrics, spawn: Spawn = plain_thread):
        self.cfg = cfg
        self.retry = retry
        self.metrics = metrics
        self.queue: queue.Queue = queue.Queue(maxsize=cfg.queue_max)
        self.stop_event = threading.Event()
        self._closing = threading.Event()
        self._spawn = spawn
        self.thread = None  # the delivery thread's handle

    def start(self) -> None:
        """Start the delivery thread."""
        self.thread = self._spawn("alert-webhook", self._run)

    def offer(self, payload: dict) -> bool:
        """Queue a delivery without waiting; False (and counted as dropped) if the queue is full."""
        try:
            self.queue.put_nowait(payload)
            return True
        except queue.Full:
            self.metrics.webhook_deliveries.labels("dropped").inc()
            log.warning("event=webhook_dropped reason=queue_full queue_max=%d", self.cfg.queue_max)
            return False

    def stop(self, timeout: float) -> None:
        """Deliver what is queued for up to `timeout` seconds, then give up on the rest."""
        self._closing.set()
        if self.thread is not None:
            self.thread.join(timeout)
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(2.0)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                payload = self.queue.get(timeout=0.1)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            self._deliver(payload)

    def _deliver(self, payload: dict) -> None:
        body = json.dumps(payload).encode()
        try:
            retry_call(lambda: self._post(body), operation="alert_webhook", policy=self.retry, is_transient=_transient,
                       stop=self.stop_event, max_elapsed_s=self.cfg.max_elapsed_s,
                       on_retry=lambda *_: self.metrics.retries.labels("alert_webhook").inc())
            self.metrics.webhook_deliveries.labels("delivered").inc()
        except (RetryExhausted, Stopped, Exception) as err:  # noqa: BLE001 - counted and logged, never raised
            self.metrics.webhook_deliveries.labels("failed").inc()
            log.error("event=webhook_failed alert_id=%s event_type=%s error=%r", payload.get("alert_id"),
                      payload.get("event"), str(err)[:200])

    def _post(self, body: bytes) -> None:
        req = urllib.request.Request(self.cfg.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "realtime-pipeline"})
        started = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as resp:
                resp.read()
        except urllib.error.HTTPError as err:
            raise HttpStatus(err.code) from None
        log.debug("event=webhook_delivered seconds=%.3f", time.monotonic() - started)
