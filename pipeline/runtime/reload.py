"""Live configuration: the current Settings, reloaded on SIGHUP or when a config file (every `--config`) changes.

A valid file is frozen into a new Config and swapped in whole; components that take live changes
(the alert evaluator: thresholds, detection, alerts.clear_*; the log level) are notified. Any other
changed key needs a restart: it is logged and listed in `restart_required`, and the running components
keep their values. An invalid file is refused, the old config stays, and the error (naming the key) is
logged, kept in `last_reload_error` and shown by the `config_reload_ok` gauge.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable

import msgspec

from ..config import Config, ConfigError, Settings, load
from ..observability.metrics import Metrics

log = logging.getLogger(__name__)

# Keys whose new value takes effect without a restart (a key or anything below it).
LIVE_KEYS = ("thresholds", "detection", "alerts.clear_readings", "alerts.clear_seconds", "alerts.flap", "alerts.maintenance",
             "log_level")


def changed_keys(old: Config, new: Config) -> list[str]:
    """Dotted names of the settings that differ (mappings are compared entry by entry)."""
    out: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b), key=str):
                walk(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        elif a != b:
            out.append(path)

    walk(msgspec.to_builtins(old), msgspec.to_builtins(new), "")
    return out


def is_live(key: str) -> bool:
    """True if a changed setting takes effect without a restart."""
    return any(key == k or key.startswith(k + ".") for k in LIVE_KEYS)


def _stamp_one(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _stamp(paths: tuple[str, ...]) -> tuple:
    """Every config file's (mtime, size, inode): a change to any of them is a change."""
    return tuple(_stamp_one(p) for p in paths)


class ConfigHolder:
    """Holds the current Settings; `request_reload()` is safe to call from a signal handler."""

    def __init__(self, settings: Settings, metrics: Metrics, env: dict[str, str] | None = None,
                 loader: Callable[..., Settings] = load):
        self.current = settings
        self.running = settings.config  # what the components were built with: restart-only keys compare to it
        self.metrics = metrics
        self.env = env
        self.loader = loader
        self.last_reload_error: str | None = None
        self.last_reload_at: float | None = None
        self.restart_required: tuple[str, ...] = ()
        self._listeners: list[Callable[[Config], None]] = []
        self._requested = threading.Event()
        self._lock = threading.Lock()
        self._stamp = _stamp(settings.files)
        metrics.config_last_reload.set(time.time())

    @property
    def watchable(self) -> bool:
        """True if the settings came from a file (tests may build them in memory)."""
        return all(os.path.isfile(p) for p in self.current.files)

    def _load_arg(self):
        """What the loader is given: the one file, or every file in merge order (`--config` repeated)."""
        files = self.current.files
        return files[0] if len(files) == 1 else list(files)

    def subscribe(self, listener: Callable[[Config], None]) -> None:
        """`listener(config)` is called with each new config that changed a live key."""
        self._listeners.append(listener)

    def request_reload(self) -> None:
        """Ask the reload thread to reload (what SIGHUP does); returns at once."""
        self._requested.set()

    def reload(self, trigger: str) -> bool:
        """Read and validate the file again; returns True if a valid config is in place afterwards."""
        with self._lock:
            self._stamp = _stamp(self.current.files)
            try:
                new = self.loader(self._load_arg(), env=dict(os.environ) if self.env is None else self.env)
            except ConfigError as err:
                self.last_reload_error = str(err)
                self.metrics.config_reload_ok.set(0)
                self.metrics.config_reloads.labels("refused").inc()
                log.error("event=config_reload_refused trigger=%s error=%r note=previous_config_stays", trigger, str(err))
                return False
            keys = changed_keys(self.current.config, new.config)
            self.last_reload_error = None
            self.metrics.config_reload_ok.set(1)
            self.metrics.config_last_reload.set(time.time())
            self.last_reload_at = time.time()
            self.restart_required = tuple(k for k in changed_keys(self.running, new.config) if not is_live(k))
            if not keys:
                self.metrics.config_reloads.labels("unchanged").inc()
                log.info("event=config_reload_unchanged trigger=%s", trigger)
                return True
            self.current = new
            live = [k for k in keys if is_live(k)]
            self.metrics.config_reloads.labels("applied").inc()
            log.info("event=config_reloaded trigger=%s live_keys=%s", trigger, ",".join(live) or "-")
            if self.restart_required:
                log.warning("event=config_needs_restart keys=%s note=running_with_previous_values",
                            ",".join(self.restart_required))
            if live:
                if any(k == "log_level" for k in live):
                    logging.getLogger().setLevel(new.config.log_level)
                for listener in self._listeners:
                    try:
                        listener(new.config)
                    except Exception:  # noqa: BLE001 - one component's bug must not stop the others' update
                        log.exception("event=config_listener_failed listener=%r", listener)
            return True

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """Thread body: reload on request, and when the file changed (checked every `interval_s`; 0: never)."""
        next_check = time.monotonic() + interval_s
        seen = self._stamp
        while not stop.is_set():
            if self._requested.wait(0.2):
                self._requested.clear()
                self.reload("sighup")
                continue
            if interval_s > 0 and time.monotonic() >= next_check:
                next_check = time.monotonic() + interval_s
                now = _stamp(self.current.files)
                # Reloaded only once the change has held for one interval: a file being written in place (truncated,
                # then filled) is never read half-written, which would parse as an empty, all-defaults config.
                if now != self._stamp and now == seen:
                    self.reload("file_changed")
                seen = now
