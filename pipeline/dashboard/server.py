"""The dashboard inside the daemon: the Flask app on a threaded werkzeug server, plus the monitor loops.

`start()` runs `serve`, `monitor` and `probes` as threads of the daemon's supervisor; the daemon calls `stop()`
first when it shuts down, so nothing reads from the pipeline's components while they close. Everything the
dashboard knows of the pipeline comes through its status interface (observability/status.py).
"""
from __future__ import annotations

import logging
import socket
import threading

from werkzeug.serving import WSGIRequestHandler, get_sockaddr, make_server, select_address_family

from ..config import Settings
from ..observability.metrics import Metrics
from ..observability.recent import ErrorLogHandler, RecentErrors
from ..observability.status import PipelineStatus
from ..runtime.supervisor import Spawn
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
    """Builds the store, view and app over a pipeline's status and binds the port (so a taken port fails the start)."""

    def __init__(self, status: PipelineStatus, settings: Settings, metrics: Metrics, spawn: Spawn, silences=None):
        cfg = settings.config
        self.cfg = cfg.dashboard
        self.recent = RecentErrors()
        # Warnings and errors logged anywhere in the pipeline (retries, failed commits) become recent errors;
        # dead letters arrive with their payload once they are durable.
        self._log_handler = ErrorLogHandler(self.recent)
        status.on_dead_letters(self.recent.add_dead_letters)
        self.store = Store(cfg.postgres, settings.secrets.postgres_password, cfg.redis, settings.secrets.redis_password,
                           self.cfg.raw_fallback_max_range_s)
        self.view = PipelineView(status, metrics, cfg.kafka, self.store, self.cfg, self.recent)
        # The alert evaluator's Silences (None with alerts off): acknowledgements and snoozes reach it at once.
        self.view.silences = silences
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
        self._spawn = spawn
        self._threads: list = []  # the supervisor's handles of serve, monitor and probes
        self.store.open()
        logging.getLogger("pipeline").addHandler(self._log_handler)
        log.info("event=dashboard_listening url=%s token=%s reads_need_token=%s", self.url,
                 "set" if settings.secrets.dashboard_token else "unset", self.cfg.require_token_for_reads)

    def start(self) -> None:
        """Serve, sample and probe, each in a thread of the supervisor."""
        self._threads = [self._spawn("dashboard", self.serve), self._spawn("dashboard-monitor", self.monitor),
                         self._spawn("dashboard-probes", self.probes)]

    def serve(self) -> None:
        """Thread body: answer requests (each on its own thread) until stop()."""
        while not self._stop.is_set():
            self.server.handle_request()

    def monitor(self) -> None:
        """Thread body: sample the metrics every second."""
        self.view.run_monitor(self._stop)

    def probes(self) -> None:
        """Thread body: consumer lag, open alerts and dependency probes every few seconds."""
        self.view.run_probes(self._stop)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and sampling, then release the dashboard's own connections."""
        if self._stop.is_set():
            return
        self._stop.set()
        logging.getLogger("pipeline").removeHandler(self._log_handler)
        for thread in self._threads:
            thread.join(timeout)
        self.server.server_close()
        self.store.close()
        log.info("event=dashboard_stopped url=%s", self.url)
