"""The dashboard inside the daemon: the Flask app on waitress (http_server.py), plus the monitor loops.

`start()` runs `serve`, `monitor` and `probes` as threads of the daemon's supervisor; the daemon calls `stop()`
first when it shuts down, so nothing reads from the pipeline's components while they close. Everything the
dashboard knows of the pipeline comes through its status interface (observability/status.py).
"""
from __future__ import annotations

import logging
import threading

from ..config import Settings
from ..config.serving import reads_need_token
from ..observability.metrics import Metrics
from ..observability.recent import ErrorLogHandler, RecentErrors
from ..observability.status import PipelineStatus
from ..runtime.supervisor import Spawn
from .app import create_app
from .http_server import HttpServer
from .store import Store
from .view import PipelineView

log = logging.getLogger(__name__)


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
                           self.cfg.raw_fallback_max_range_s, periods=cfg.aggregation.periods, retention=cfg.retention)
        # The daemon's Silences (None with alerts off): acknowledgements and snoozes reach it at once.
        self.view = PipelineView(status, metrics, cfg.kafka, self.store, self.cfg, self.recent, silences=silences)
        self.app = create_app(self.view, self.cfg, settings.secrets.dashboard_token)
        self.http = HttpServer(self.app, self.cfg)
        self.port = self.http.port
        address = f"[{self.cfg.host}]" if ":" in self.cfg.host else self.cfg.host  # an IPv6 address needs brackets
        self.url = f"http://{address}:{self.port}"
        self._stop = threading.Event()
        self._spawn = spawn
        self._threads: list = []  # the supervisor's handles of serve, monitor and probes
        try:
            self.store.open()
        except BaseException:
            self.http.close()
            raise
        logging.getLogger("pipeline").addHandler(self._log_handler)
        log.info("event=dashboard_listening url=%s token=%s reads_need_token=%s threads=%d connection_limit=%d",
                 self.url, "set" if settings.secrets.dashboard_token else "unset", reads_need_token(self.cfg),
                 self.cfg.threads, self.cfg.connection_limit)

    def start(self) -> None:
        """Serve, sample and probe, each in a thread of the supervisor."""
        self._threads = [self._spawn("dashboard", self.serve), self._spawn("dashboard-monitor", self.monitor),
                         self._spawn("dashboard-probes", self.probes)]

    def serve(self) -> None:
        """Thread body: accept connections and hand requests to waitress's thread pool until stop()."""
        self.http.serve()

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
        self.http.stop()
        logging.getLogger("pipeline").removeHandler(self._log_handler)
        for thread in self._threads:
            thread.join(timeout)
        self.http.close()
        self.store.close()
        log.info("event=dashboard_stopped url=%s", self.url)
