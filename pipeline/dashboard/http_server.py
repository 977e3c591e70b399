"""The dashboard's HTTP server: waitress (pinned in requirements.txt), with every limit from dashboard.*.

waitress answers requests on a fixed pool of `threads`, holds at most `connection_limit` client connections
(beyond that it stops accepting, so new ones wait in the kernel's listen backlog), closes a connection idle
for `channel_timeout_s`, and refuses a body or header over its cap (413, 431) before the app reads it.

waitress has no stop of its own for a server run in a thread: `close()` only drops the listening socket, and
its loop goes on while any client connection stays open. So this module runs the loop itself, one poll at a
time, over a socket map it owns; `stop()` sets a flag and wakes the poll, and the serving thread closes the
listener and every connection. That loop and the map's contents are waitress's internals (3.0.2): they stay
in this module, and tests/integration/test_dashboard_serving.py checks the limits they decide.
"""
from __future__ import annotations

import logging
import socket
import threading

from waitress import wasyncore
from waitress.server import create_server

from ..config import DashboardConfig

log = logging.getLogger(__name__)

# Besides client connections, waitress's socket map holds the listener and the trigger that wakes the poll;
# its connection_limit counts the whole map.
OWN_SOCKETS = 2
# How long the dispatcher waits for requests in flight at stop(); its threads are daemons either way.
STOP_GRACE_S = 0.5


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, or an OSError naming the address and the keys that chose it."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        raise OSError(err.errno, f"dashboard cannot listen on {host}:{port} (dashboard.host, dashboard.port): "
                                 f"{err.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise OSError(err.errno, f"dashboard cannot listen on {host}:{port} (dashboard.host, dashboard.port): "
                                 f"{err.strerror}") from None
    return sock


class HttpServer:
    """A WSGI app on a bound port, served by `serve()` in one thread until `stop()`."""

    def __init__(self, app, cfg: DashboardConfig):
        self._map: dict = {}
        self._stop = threading.Event()
        self._serving = False
        self.server = create_server(
            app, map=self._map, sockets=[listen(cfg.host, cfg.port)],
            threads=cfg.threads,
            connection_limit=cfg.connection_limit + OWN_SOCKETS,
            channel_timeout=cfg.channel_timeout_s,
            # Idle connections are looked for this often, so one lives at most channel_timeout_s + this.
            cleanup_interval=max(1, min(30, cfg.channel_timeout_s // 2)),
            max_request_body_size=cfg.max_request_body_bytes,
            max_request_header_size=cfg.max_request_header_bytes,
            ident="realtime-pipeline",  # the Server header: no server name or version given away
            asyncore_use_poll=True,  # select() fails beyond 1024 descriptors
        )
        self.port: int = self.server.effective_port

    def serve(self) -> None:
        """Thread body: accept and read connections until stop(), then close the listener and every connection."""
        self._serving = True
        try:
            while not self._stop.is_set() and self._map:
                wasyncore.loop(timeout=self.server.adj.asyncore_loop_timeout, map=self._map,
                               use_poll=True, count=1)
        finally:
            wasyncore.close_all(self._map, ignore_all=True)
            self.server.task_dispatcher.shutdown(timeout=STOP_GRACE_S)

    def stop(self) -> None:
        """Ask serve() to return; it closes the sockets in its own thread, so nothing races the poll."""
        self._stop.set()
        try:
            self.server.pull_trigger()
        except OSError:  # the trigger is already closed: serve() has finished
            pass

    def close(self) -> None:
        """Release the sockets and threads when serve() never ran (a start that failed after binding)."""
        self._stop.set()
        if self._serving:
            return  # serve() closes them itself, in its own thread
        wasyncore.close_all(self._map, ignore_all=True)
        self.server.task_dispatcher.shutdown(timeout=STOP_GRACE_S)
