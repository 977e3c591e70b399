"""The alert notifier: `offer(payload)` from the alert store's thread decides (policy.py) which channels hear
of it; each channel delivers from a bounded queue in a thread of its own, so a slow or failing channel
never delays another or the pipeline.

A delivery is retried with backoff (network errors, timeouts, HTTP 429 and 5xx) for `max_elapsed_s`; what
still fails, or fails for good at once (4xx, a redirect), becomes a dead letter (kind retry_exhausted,
reason notification_failed, stage alert_notifier) naming the channel, never its URL, and is counted.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Callable, Mapping, Sequence

from ...config import AlertsConfig, ConfigError, RetryConfig, Secret, channel_urls
from ...config.alerting import LEGACY_WEBHOOK_CHANNEL
from ...observability.metrics import Metrics
from ...records import EXHAUSTED, DeadLetter, RawMessage
from ...runtime.retry import RetryExhausted, Stopped, retry_call
from ...runtime.supervisor import Spawn, plain_thread
from .channels import build_sender
from .http import DeliveryError
from .policy import NotificationPolicy, Notice, Route, Silencer, never_silenced

log = logging.getLogger(__name__)
DEAD_LETTER_REASON = "notification_failed"
STAGE = "alert_notifier"


class _Channel:
    """One channel's sender, bounded queue and thread handle."""

    def __init__(self, sender, queue_max: int, max_elapsed_s: float):
        self.sender = sender
        self.name = sender.name
        self.queue: queue.Queue = queue.Queue(maxsize=queue_max)
        self.max_elapsed_s = max_elapsed_s
        self.thread = None


class AlertNotifier:
    """Routes alert payloads to channels; `start()`, `offer(payload)` from any thread, `stop(timeout)`."""

    def __init__(self, alerts: AlertsConfig, senders: Sequence, retry: RetryConfig, metrics: Metrics, *,
                 silenced: Silencer = never_silenced, dead_letters=None, clock: Callable[[], float] = time.time,
                 spawn: Spawn = plain_thread):
        cfg = alerts.notifications
        self.cfg, self.retry, self.metrics, self.clock = cfg, retry, metrics, clock
        self.dead_letters = dead_letters  # a DeadLetterWriter (None: failures are only counted and logged)
        hook = alerts.webhook  # the legacy channel keeps its own queue and retry settings
        self.channels = {s.name: _Channel(s, hook.queue_max, hook.max_elapsed_s)
                         if hook.url and s.name == LEGACY_WEBHOOK_CHANNEL
                         else _Channel(s, cfg.queue_max, cfg.max_elapsed_s) for s in senders}
        legacy = [Route(LEGACY_WEBHOOK_CHANNEL, frozenset(("warning", "critical")))] \
            if hook.url and LEGACY_WEBHOOK_CHANNEL in self.channels else []
        self.policy = NotificationPolicy.from_config(cfg, legacy, silenced)
        self.lock = threading.Lock()  # the policy's state: offer (alert thread) against digests (channel threads)
        self.stop_event = threading.Event()  # the shutdown deadline: give up on retries
        self._closing = threading.Event()  # deliver what is queued, then end
        self._spawn = spawn

    def start(self) -> None:
        for ch in self.channels.values():
            ch.thread = self._spawn(f"notify-{ch.name}", lambda ch=ch: self._run(ch))

    def offer(self, payload: dict) -> None:
        """Decide and queue without waiting; a full channel queue drops the notice and counts it."""
        with self.lock:
            notices, reason = self.policy.decide(payload, self.clock())
        if reason is not None:
            self.metrics.notifications_suppressed.labels(reason).inc()
            log.info("event=notification_suppressed reason=%s alert_id=%s event_type=%s", reason,
                     payload.get("alert_id"), payload.get("event"))
        for notice in notices:
            self._enqueue(notice)

    def stop(self, timeout: float) -> None:
        """Send collected digests, deliver what is queued for up to `timeout` seconds, then give up."""
        self._closing.set()
        deadline = time.monotonic() + timeout  # one deadline for all channels, not one per channel
        for ch in self.channels.values():
            if ch.thread is not None:
                ch.thread.join(max(0.0, deadline - time.monotonic()))
        self.stop_event.set()
        for ch in self.channels.values():
            if ch.thread is not None:
                ch.thread.join(2.0)
            if not ch.queue.empty():
                log.warning("event=notifications_unsent channel=%s queued=%d reason=shutdown", ch.name, ch.queue.qsize())

    # -- channel threads ---------------------------------------------------------------------------
    def _enqueue(self, notice: Notice) -> None:
        try:
            self.channels[notice.channel].queue.put_nowait(notice)
        except queue.Full:
            self.metrics.webhook_deliveries.labels("dropped").inc()
            log.warning("event=notification_dropped reason=queue_full channel=%s", notice.channel)

    def _run(self, ch: _Channel) -> None:
        while not self.stop_event.is_set():
            closing = self._closing.is_set()
            with self.lock:
                digest = self.policy.due(ch.name, self.clock(), force=closing)
            if digest is not None:
                self.metrics.notification_digests.labels(ch.name).inc()
                self._deliver(ch, digest)
            try:
                notice = ch.queue.get(timeout=0.1)
            except queue.Empty:
                if closing:
                    return
                continue
            self._deliver(ch, notice)

    def _deliver(self, ch: _Channel, notice: Notice) -> None:
        op = ch.sender.operation
        first_failure = time.time()
        attempts = [0]

        def attempt() -> None:
            attempts[0] += 1
            ch.sender.send(notice)

        try:
            retry_call(attempt, operation=op, policy=self.retry, stop=self.stop_event,
                       is_transient=lambda e: not isinstance(e, DeliveryError) or e.transient,
                       max_elapsed_s=ch.max_elapsed_s, on_retry=lambda *_: self.metrics.retries.labels(op).inc())
        except Exception as err:  # noqa: BLE001 - RetryExhausted, Stopped, DeliveryError: counted, dead-lettered
            last = err.last if isinstance(err, RetryExhausted) else err
            self._failed(ch, notice, last, attempts[0], first_failure, stopped=isinstance(err, Stopped))
            return
        self.metrics.notifications_sent.labels(ch.name).inc()
        self.metrics.webhook_deliveries.labels("delivered").inc()
        log.info("event=notification_sent channel=%s alerts=%d digest=%s attempts=%d", ch.name, notice.count,
                 notice.digest, attempts[0])

    def _failed(self, ch: _Channel, notice: Notice, err: BaseException, attempts: int, first_failure: float,
                stopped: bool) -> None:
        text = f"channel={ch.name}: {err if isinstance(err, DeliveryError) else type(err).__name__}"
        self.metrics.notifications_failed.labels(ch.name).inc()
        self.metrics.webhook_deliveries.labels("failed").inc()
        log.error("event=notification_failed channel=%s alerts=%d attempts=%d stopped=%s error=%r", ch.name,
                  notice.count, attempts, stopped, text[:200])
        if self.dead_letters is None:
            return
        first = notice.alerts[0]
        value = {"channel": ch.name, "digest": notice.digest, "alerts": notice.alerts}
        if notice.more:
            value["more"] = notice.more
        source = RawMessage(mqtt_topic="", payload=json.dumps(value, default=str).encode(), received_at=first_failure,
                            key=str(first.get("alert_id")).encode())
        letter = DeadLetter(source, DEAD_LETTER_REASON, STAGE, text, EXHAUSTED, attempts=attempts,
                            metric=first.get("metric"), first_failure_at=first_failure)
        try:
            self.dead_letters.send([letter], timeout=2.0 if stopped else 10.0)  # shutting down: briefly
        except Exception as dl_err:  # noqa: BLE001 - Kafka away too: the failure is counted and logged above
            log.error("event=notification_dead_letter_failed channel=%s error=%r", ch.name, str(dl_err)[:200])


def build_notifier(alerts: AlertsConfig, env: Mapping[str, str], signing_key: Secret, retry: RetryConfig,
                   metrics: Metrics, *, silenced: Silencer = never_silenced, dead_letters=None,
                   spawn: Spawn = plain_thread) -> AlertNotifier | None:
    """The notifier for the configured channels (None when there are none); URLs from `env`."""
    urls = channel_urls(alerts, env)
    if not urls:
        return None
    senders = []
    for name, url in urls.items():
        legacy = name == LEGACY_WEBHOOK_CHANNEL and alerts.webhook.url
        timeout = alerts.webhook.timeout_s if legacy else alerts.notifications.timeout_s
        try:
            senders.append(build_sender(name, url, signing_key, timeout))
        except ValueError as err:
            raise ConfigError(f"alerts.notifications: {err}") from None
    notifier = AlertNotifier(alerts, senders, retry, metrics, silenced=silenced, dead_letters=dead_letters, spawn=spawn)
    if not signing_key and any(getattr(s, "operation", "") == "alert_webhook" for s in senders):
        log.warning("event=alert_webhook_unsigned hint=set ALERT_WEBHOOK_SECRET to sign deliveries")
    return notifier
