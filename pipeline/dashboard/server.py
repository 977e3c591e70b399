"""The dashboard inside the daemon: the Flask app on a threaded werkzeug server, plus the monitor loops.

The daemon runs `serve`, `monitor` and `probes` as worker threads and calls `stop()` first when it shuts down,
so nothing reads from the pipeline's components while they close.
"""
from __future__ import annotations

import logging
import socket
import threading

from werkzeug.serving import WSGIRequestHandler, get_sockaddr, make_server, select_address_family

from ..observability.recent import ErrorLogHandler, RecentErrors
from .app import create_app
from .store import Store
from .view import PipelineView

log = logging.getLogger(__name__)


class RequestHandler(WSGIRequestHandler):
    """werkzeug's handler without the server and Python versions in every response."""

    def version_string(self) -> str:
        return "realtime-pipeline"


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, or an OSError naming the address (werkzeug would exit the process instead)."""
    family = select_address_family(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(get_sockaddr(host, port, family))
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise OSError(err.errno, f"dashboard cannot listen on {host}:{port} (dashboard.host, dashboard.port): "
                                 f"{err.strerror}") from None
    return sock


class Dashboard:
    """Builds the store, view and app for a Pipeline and binds the port (so a taken port fails the start)."""

    def __init__(self, pipeline):
        settings = pipeline.settings
        cfg = settings.config
        self.cfg = cfg.dashboard
        self.recent = RecentErrors()
        # Warnings and errors logged anywhere in the pipeline (retries, failed commits) become recent errors;
        # dead letters arrive with their payload through the dead-letter sink's listeners.
        self._log_handler = ErrorLogHandler(self.recent)
        for sink in pipeline.sinks:
            if hasattr(sink, "listeners"):
                sink.listeners.append(self.recent.add_dead_letters)
        self.store = Store(cfg.postgres, settings.secrets.postgres_password, cfg.redis, settings.secrets.redis_password,
                           self.cfg.raw_fallback_max_range_s)
        self.view = PipelineView(pipeline, self.store, self.cfg, self.recent)
        self.app = create_app(self.view, self.cfg, settings.secrets.dashboard_token)
        listener = listen(self.cfg.host, self.cfg.port)
        try:
            self.server = make_server(self.cfg.host, self.cfg.port, self.app, threaded=True, fd=listener.fileno(),
                                      request_handler=RequestHandler)
        finally:
            listener.close()  # the server holds its own duplicate of the socket
        self.server.timeout = 0.25  # how often the serving loop looks at the stop flag
        self.port = self.server.server_address[1]
        self.url = f"http://{self.cfg.host}:{self.port}"
        self._stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self.store.open()
        logging.getLogger("pipeline").addHandler(self._log_handler)
        log.info("event=dashboard_listening url=%s token=%s reads_need_token=%s", self.url,
                 "set" if settings.secrets.dashboard_token else "unset", self.cfg.require_token_for_reads)

    def serve(self) -> None:
        """Worker thread: answer requests (each on its own thread) until stop()."""
        self._threads["serve"] = threading.current_thread()
        while not self._stop.is_set():
            self.server.handle_request()

    def monitor(self) -> None:
        """Worker thread: sample the metrics every second."""
        self._threads["monitor"] = threading.current_thread()
        self.view.run_monitor(self._stop)

    def probes(self) -> None:
        """Worker thread: consumer lag, open alerts and dependency probes every few seconds."""
        self._threads["probes"] = threading.current_thread()
        self.view.run_probes(self._stop)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and sampling, then release the dashboard's own connections."""
        if self._stop.is_set():
            return
        self._stop.set()
        logging.getLogger("pipeline").removeHandler(self._log_handler)
        for thread in self._threads.values():
            if thread is not threading.current_thread():
                thread.join(timeout)
        self.server.server_close()
        self.store.close()
        log.info("event=dashboard_stopped url=%s", self.url)
