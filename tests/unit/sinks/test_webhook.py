"""The alert webhook against a tiny local HTTP server: JSON bodies, retries with backoff, failures counted."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import CollectorRegistry

from pipeline.sinks.webhook import WebhookNotifier
from pipeline.config import RetryConfig, WebhookConfig
from pipeline.observability.metrics import Metrics

FAST = RetryConfig(initial_interval_s=0.01, max_interval_s=0.05, jitter=0.0)


class Server:
    """Answers each POST with the next status from `statuses` (then 200), recording the bodies."""

    def __init__(self, statuses=()):
        self.statuses = list(statuses)
        self.bodies: list[dict] = []
        self.attempts = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.attempts += 1
                status = outer.statuses.pop(0) if outer.statuses else 200
                if status == 200:
                    outer.bodies.append(json.loads(body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    servers = []

    def make(statuses=()):
        s = Server(statuses)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def notifier(url, **kw):
    n = WebhookNotifier(WebhookConfig(url=url, timeout_s=2, **kw), FAST, Metrics(CollectorRegistry()))
    n.start()
    return n


def count(n, result):
    return n.metrics.registry.get_sample_value("pipeline_alert_webhook_deliveries_total", {"result": result}) or 0


def wait(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.02)
    return pred()


def test_delivers_json_in_order_and_retries_server_errors(server):
    srv = server([503, 500])
    n = notifier(srv.url)
    n.offer({"event": "opened", "alert_id": 1})
    n.offer({"event": "resolved", "alert_id": 1})
    assert wait(lambda: count(n, "delivered") == 2)
    n.stop(1)
    assert srv.bodies == [{"event": "opened", "alert_id": 1}, {"event": "resolved", "alert_id": 1}]
    assert srv.attempts == 4
    assert n.metrics.registry.get_sample_value("pipeline_retries_total", {"operation": "alert_webhook"}) == 2


def test_client_error_fails_at_once_and_is_counted(server):
    srv = server([400])
    n = notifier(srv.url)
    n.offer({"event": "opened"})
    assert wait(lambda: count(n, "failed") == 1)
    n.stop(1)
    assert srv.attempts == 1 and srv.bodies == []


def test_unreachable_endpoint_gives_up_after_max_elapsed(server):
    n = notifier("http://127.0.0.1:9/nothing-listens-here", max_elapsed_s=0.2)
    n.offer({"event": "opened"})
    assert wait(lambda: count(n, "failed") == 1)
    n.stop(1)


def test_full_queue_drops_and_counts_without_blocking():
    n = WebhookNotifier(WebhookConfig(url="http://127.0.0.1:9/", queue_max=2), FAST, Metrics(CollectorRegistry()))
    started = time.monotonic()
    results = [n.offer({"i": i}) for i in range(5)]  # thread not started: nothing drains the queue
    assert time.monotonic() - started < 0.5
    assert results == [True, True, False, False, False] and count(n, "dropped") == 3
