"""The dashboard's HTTP server on real sockets (waitress, pipeline/dashboard/http_server.py): the connection
limit, the idle timeout, the body and header caps, the Host check, and a stop that does not wait for clients.
Only the last test needs the pipeline's services (the daemon as a child process); the others serve the real
app over a stub view."""
from __future__ import annotations

import http.client
import re
import socket
import threading
import time

import pytest

from pipeline.config import DashboardConfig, Secret
from pipeline.dashboard import create_app
from pipeline.dashboard.http_server import HttpServer
from tests.integration.clients import DaemonProcess, wait_for

TOKEN = "serving-token-0123"


class StubView:
    """Just enough of a view for /health and /ready."""

    def health(self):
        return True, {"status": "ok", "threads": {}}

    def ready(self):
        return True, {"ready": True, "failing": [], "problems": {}, "checks": {}}


class Served:
    """An HttpServer over the real app, served in a thread like the daemon does."""

    def __init__(self, **cfg):
        self.cfg = DashboardConfig(port=0, **cfg)
        self.http = HttpServer(create_app(StubView(), self.cfg, Secret(TOKEN)), self.cfg)
        self.thread = threading.Thread(target=self.http.serve, name="dashboard-test", daemon=True)
        self.thread.start()
        self.sockets: list[socket.socket] = []

    def connect(self, timeout: float = 5.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.http.port), timeout=timeout)
        self.sockets.append(sock)
        return sock

    def request(self, method: str = "GET", path: str = "/health", headers: dict | None = None, body: bytes | None = None,
                timeout: float = 5.0) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", self.http.port, timeout=timeout)
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        response.read()
        conn.close()
        return response

    def stop(self) -> float:
        started = time.monotonic()
        self.http.stop()
        self.thread.join(5)
        return time.monotonic() - started


def read_response(sock: socket.socket) -> bytes:
    """One whole response (head and Content-Length body) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head


def keep_alive_connection(served: Served) -> socket.socket:
    """A connection the server has accepted (it answered one request on it) and that now sits idle."""
    sock = served.connect()
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert read_response(sock).startswith(b"HTTP/1.1 200")
    return sock


@pytest.fixture
def serve():
    started: list[Served] = []

    def start(**cfg) -> Served:
        started.append(Served(**cfg))
        return started[-1]

    yield start
    for served in started:
        took = served.stop()
        for sock in served.sockets:
            sock.close()
        assert not served.thread.is_alive() and took < 2.0, f"serving thread still alive {took:.1f}s after stop()"


def test_connection_limit_holds_new_connections_until_one_closes(serve):
    served = serve(connection_limit=3, channel_timeout_s=60)
    idle = [keep_alive_connection(served) for _ in range(2)]
    assert served.request().status == 200  # under the limit: served
    idle.append(keep_alive_connection(served))  # now three idle connections: the limit

    # The next connection is not accepted: its request waits in the listen backlog.
    waiting = served.connect(timeout=10)
    waiting.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    waiting.settimeout(1.5)
    with pytest.raises(socket.timeout):
        waiting.recv(65536)

    # One idle connection goes away: the waiting request is served.
    idle.pop().close()
    waiting.settimeout(10)
    assert read_response(waiting).startswith(b"HTTP/1.1 200")


def test_idle_connections_are_closed_after_channel_timeout(serve):
    served = serve(channel_timeout_s=2)
    silent = served.connect()  # connects and never sends a byte
    used = keep_alive_connection(served)  # one request, then idle under keep-alive
    started = time.monotonic()
    silent.settimeout(1.0)
    with pytest.raises(socket.timeout):  # still open within the timeout
        silent.recv(1)
    for sock in (silent, used):
        sock.settimeout(10)
        assert sock.recv(1) == b""  # closed by the server
    took = time.monotonic() - started
    # channel_timeout_s 2 plus at most cleanup_interval 1 plus the poll's 1 s.
    assert 1.0 <= took < 6.0, took


def test_oversized_body_is_413_and_a_small_one_reaches_the_app(serve):
    served = serve(max_request_body_bytes=1024)
    big = served.request("POST", "/api/alerts/1/resolve", headers={"Content-Type": "application/json"}, body=b"x" * 4096)
    assert big.status == 413
    small = served.request("POST", "/api/alerts/1/resolve", headers={"Content-Type": "application/json"}, body=b"{}")
    assert small.status == 401  # the app's answer: no Bearer token


def test_oversized_headers_are_431(serve):
    served = serve(max_request_header_bytes=2048)
    assert served.request(headers={"X-Filler": "y" * 4096}).status == 431
    assert served.request(headers={"X-Filler": "y" * 512}).status == 200


def test_unknown_host_is_400_and_the_server_names_no_version(serve):
    served = serve()
    assert served.request(headers={"Host": "rebound.evil.example"}).status == 400
    ok = served.request(headers={"Host": f"127.0.0.1:{served.http.port}"})
    assert ok.status == 200 and ok.getheader("Server") == "realtime-pipeline"
    assert served.request(headers={"Host": f"localhost:{served.http.port}"}).status == 200


def test_wrong_tokens_over_real_sockets_get_429_with_retry_after(serve):
    served = serve(require_token_for_reads=True)
    wrong = {"Authorization": "Bearer guess-guess-guess-1"}
    assert [served.request(path="/ready", headers=wrong).status for _ in range(10)] == [200] * 10  # counted, not told
    answer = served.request(path="/api/pipeline", headers=wrong)
    assert answer.status == 429 and 1 <= int(answer.getheader("Retry-After")) <= 6
    assert served.request(path="/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status == 429
    assert served.request(path="/health").status == 200  # probes without a token still answered


def test_stop_closes_the_port_and_idle_connections_promptly(serve):
    served = serve(channel_timeout_s=60)
    idle = keep_alive_connection(served)
    took = served.stop()
    assert not served.thread.is_alive() and took < 2.0
    idle.settimeout(5)
    assert idle.recv(1) == b""
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", served.http.port), timeout=2).close()


def test_sigterm_with_clients_holding_connections_ends_the_daemon_within_its_bound(env, tmp_path):
    budget = 4  # processing.shutdown_timeout_s; the daemon's bound is budget + 5
    config = {"dashboard": {"enabled": True, "port": 0, "channel_timeout_s": 600},
              "processing": {"shutdown_timeout_s": budget}}
    env.migrate(env.settings(**config))
    daemon = DaemonProcess(env.write_config(tmp_path / "config.yaml", **config), tmp_path / "daemon.log").start()
    clients: list[socket.socket] = []
    try:
        found = wait_for(lambda: re.search(r"event=dashboard_listening url=http://127.0.0.1:(\d+)", daemon.log_text()), 10,
                         what="the dashboard's port in the log")
        port = int(found.group(1))
        for _ in range(5):  # idle keep-alive connections, and one request that never finishes its headers
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 200")
            clients.append(sock)
        slow = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow.sendall(b"GET /api/pipeline HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        clients.append(slow)
        code, took = daemon.terminate(timeout=budget + 5 + 20)
        print(f"exit code {code} after {took:.1f}s")
        assert code == 0 and took <= budget + 5, daemon.log_tail(30)
        assert "event=dashboard_stopped" in daemon.log_text()
    finally:
        for sock in clients:
            sock.close()
        daemon.stop()
