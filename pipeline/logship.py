"""Ship a Python application's logs to the pipeline over MQTT, in two lines:

    from pipeline.logship import MQTTHandler
    logging.getLogger().addHandler(MQTTHandler(app="billing", host="localhost"))

Each record is published (QoS 1) to <topic_root>/<app> as
{"timestamp": epoch seconds, "level": "ERROR", "message": "...", "logger": "billing.db", "extra": {...},
 "id": "<boot id>:<sequence>"}
where `extra` holds what the call passed with `extra=` and `id` is unique per handler (a random boot id and a
counter), set at emit time and kept in the spool, so the pipeline stores a record sent again (or replayed) once.
emit() never waits for the network or the disk and never raises: it formats the record and puts it into a bounded hand-off buffer (full: dropped and counted in
`handler.dropped`); a background thread writes it to the spool on disk (pipeline/agents/spool.py, by default
<state dir>/logship-<app>.db), which keeps it until the broker acknowledged it, across restarts and crashes.
Records about the shipping itself (loggers `paho`, `pipeline.logship`, `pipeline.agents.spool`, anything logged
from the handler's own threads) are never shipped, so shipping cannot feed on itself.

Over TLS, with the names and meaning of the daemon's mqtt.tls.* (tls, ca_file, cert_file, key_file, insecure):

    MQTTHandler(app="billing", host="mqtt.example.com", port=8883, tls=True, ca_file="/etc/ssl/mqtt-ca.pem")
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import queue
import re
import threading
import time
import uuid

from .agents.publisher import MqttPublisher
from .agents.spool import DEFAULT_MAX_BYTES, open_spooled, spool_path as resolve_spool_path
from .config import TlsConfig
from .runtime.supervisor import Spawn, plain_thread

log = logging.getLogger(__name__)

SKIP_LOGGERS = ("paho", "pipeline.logship", "pipeline.agents.spool")
_APP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]*")
APP_MAX = 46
# Attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
_MAX_DEPTH, _MAX_ITEMS, _MAX_TEXT = 6, 100, 2000
_UNACKED_WINDOW = 100  # messages handed to paho but not acknowledged: bounds paho's memory
_BATCH, _BATCH_BYTES = 500, 256 * 1024  # at most per spool write: small writes keep the file near its bound


def level_name(levelno: int) -> str:
    """The standard level at or below `levelno` (custom levels such as 25 or 5 map down: INFO, DEBUG)."""
    for threshold, name in ((50, "CRITICAL"), (40, "ERROR"), (30, "WARNING"), (20, "INFO")):
        if levelno >= threshold:
            return name
    return "DEBUG"


def _text(value: str) -> str:
    # The pipeline refuses NUL and lone surrogates (PostgreSQL cannot store them): make them visible instead.
    return value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\\x00")


def truncate_utf8(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, marked as cut."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    marker = f" [truncated {len(data)} bytes]"
    return data[: max(0, limit - len(marker))].decode("utf-8", "ignore") + marker


def clean(value, depth: int = 0):
    """A JSON-safe copy of an `extra` value: finite numbers, text without NUL, bounded depth and size."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return _text(value[:_MAX_TEXT])
    if depth < _MAX_DEPTH:
        if isinstance(value, dict):
            return {_text(str(k))[:200]: clean(v, depth + 1) for k, v in list(value.items())[:_MAX_ITEMS]}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [clean(v, depth + 1) for v in list(value)[:_MAX_ITEMS]]
    try:
        return _text(str(value)[:_MAX_TEXT])
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the record
        return f"<unprintable {type(value).__name__}>"


class MQTTHandler(logging.Handler):
    """A logging.Handler that ships records to the pipeline over MQTT without ever blocking the application."""

    def __init__(self, app: str, host: str = "localhost", port: int = 1883, *, level: int = logging.NOTSET,
                 topic_root: str = "logs", username: str | None = None, password: str | None = None,
                 buffer_size: int = 10000, max_message_bytes: int = 8192, max_extra_bytes: int = 8192,
                 close_timeout: float = 2.0, exclude: tuple[str, ...] = (), client_id: str | None = None,
                 spawn: Spawn = plain_thread, tls: bool | TlsConfig = False, ca_file: str = "", cert_file: str = "",
                 key_file: str = "", insecure: bool = False, spool_path: str | None = "",
                 spool_max_bytes: int = DEFAULT_MAX_BYTES, report_interval_s: float = 60.0):
        if len(app) > APP_MAX or not _APP_RE.fullmatch(app) or not app.isascii():
            raise ValueError(f"app {app!r}: expected up to {APP_MAX} characters matching {_APP_RE.pattern}")
        if not topic_root or any(c in topic_root for c in "/+#"):
            raise ValueError(f"topic_root {topic_root!r}: expected one topic level without / + #")
        super().__init__(level)
        self.app = app
        self.topic = f"{topic_root}/{app}"
        self.max_message_bytes = max_message_bytes
        self.max_extra_bytes = max_extra_bytes
        self.close_timeout = close_timeout
        self.skip_loggers = SKIP_LOGGERS + tuple(exclude)
        if not isinstance(tls, TlsConfig):  # the daemon passes its mqtt.tls section as it is
            tls = TlsConfig(enabled=tls, ca_file=ca_file, cert_file=cert_file, key_file=key_file, insecure=insecure)
        self.publisher = MqttPublisher(host, port, client_id or f"logship-{app}-{uuid.uuid4().hex[:8]}", username,
                                       password, max_queued=2 * _UNACKED_WINDOW, tls=tls)
        # "" means the default file, None memory only; a file owned by another process means memory only too,
        # since logging must not break the application.
        path = None if spool_path is None else resolve_spool_path(spool_path, f"logship-{app}.db")
        self.shipper = open_spooled(self.publisher, path, spool_max_bytes, f"logship-{app}", logger=log,
                                    window=_UNACKED_WINDOW, report_interval_s=report_interval_s,
                                    on_error=lambda err: log.warning("event=logship_spool_unusable app=%s error=%r "
                                                                     "note=memory_only", app, str(err)[:200]))
        self.spool_path = path if self.shipper.spool.path is not None else None
        self._lost = 0  # records dropped before the spool: hand-off full, unencodable, or left at close
        self.unconfirmed = 0  # records not acknowledged when close() gave up waiting (a file spool keeps them)
        self._accepted = 0  # records put into the hand-off buffer
        self._handled = 0  # of those, written to the spool or dropped by the background thread
        self._count_lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(maxsize=buffer_size)
        self._boot, self._seq = uuid.uuid4().hex[:16], itertools.count()  # the records' ids: <boot>:<n>
        self._closing = threading.Event()
        self._deadline = math.inf
        self._closed = False
        # The daemon passes its supervisor's spawn, so the publishing threads are among its named threads.
        self.shipper.start(spawn)
        self._thread = spawn(f"logship-{app}", self._run)

    @property
    def sent(self) -> int:
        """Records the broker acknowledged."""
        return self.publisher.acked

    @property
    def dropped(self) -> int:
        """Records lost: hand-off buffer full, dropped oldest from a full spool, refused by the disk."""
        return self._lost + self.shipper.dropped

    @property
    def backlog(self) -> int:
        """Records waiting: in the hand-off buffer and in the spool."""
        return self._queue.qsize() + self.shipper.pending

    def status(self) -> dict:
        """The spool's backlog (queued, bytes, dropped, connected) plus the hand-off buffer and what it dropped."""
        return {**self.shipper.status(), "handoff": self._queue.qsize(), "handoff_dropped": self._lost,
                "dropped": self.dropped, "spool": self.spool_path or ":memory:"}

    def _drop(self, n: int) -> None:
        with self._count_lock:
            self._lost += n

    def about_shipping(self, record: logging.LogRecord) -> bool:
        """True for records the shipping itself caused: never shipped."""
        name = record.name
        if any(name == p or name.startswith(p + ".") for p in self.skip_loggers):
            return True
        return (record.thread in (self._thread.ident, self.shipper.thread_ident)
                or record.threadName == self.publisher.thread_name)

    def emit(self, record: logging.LogRecord) -> None:
        if self._closed or self.about_shipping(record):
            return
        try:
            item = self.prepare(record)
        except Exception:  # noqa: BLE001 - logging must never raise into the application
            self.handleError(record)
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._drop(1)
            return
        with self._count_lock:
            self._accepted += 1

    def prepare(self, record: logging.LogRecord) -> dict:
        """The record as the pipeline's log contract, formatted now (arguments may change later)."""
        extra = {k: clean(v) for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        return {"timestamp": record.created, "level": level_name(record.levelno),
                "message": truncate_utf8(_text(self.format(record)), self.max_message_bytes),
                "logger": _text(record.name)[:200], "extra": extra, "id": f"{self._boot}:{next(self._seq)}"}

    def encode(self, item: dict) -> bytes:
        """JSON bytes; an `extra` over max_extra_bytes is replaced by a marker so the record still goes."""
        extra = json.dumps(item["extra"], ensure_ascii=False, separators=(",", ":"))
        if len(extra.encode("utf-8")) > self.max_extra_bytes:
            item = {**item, "extra": {"extra_truncated": True}}
        return json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def _run(self) -> None:
        while True:
            try:
                batch = [self._queue.get(timeout=0.2)]
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            messages, bad, size = [], 0, 0
            while True:
                try:
                    body = self.encode(batch[-1])
                    messages.append((self.topic, body))
                    size += len(body)
                except Exception:  # noqa: BLE001 - never die: a record that cannot be encoded is counted
                    bad += 1
                if len(batch) >= _BATCH or size >= _BATCH_BYTES:
                    break
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            ok = self.shipper.publish_many(messages) if messages else True  # a failed write is counted there
            with self._count_lock:
                self._handled += len(batch)
                self._lost += bad
            if not ok:
                time.sleep(0.2)  # the disk refused: do not spin on it
            if self._closing.is_set() and time.monotonic() > self._deadline:
                self._drop(self._queue.qsize())
                return

    def sync(self, timeout: float = 5.0) -> bool:
        """Wait until every record emitted so far is in the spool (on disk when it is a file); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._count_lock:
            target = self._accepted
        while True:
            with self._count_lock:
                if self._handled >= target:
                    return True
            if time.monotonic() > deadline or not self._thread.is_alive():
                return False
            time.sleep(0.01)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every buffered record is acknowledged by the broker (at most `timeout`, default close_timeout)."""
        deadline = time.monotonic() + (self.close_timeout if timeout is None else timeout)
        if not self.sync(timeout=deadline - time.monotonic()):
            return False
        return self.shipper.wait(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Write what is buffered to the spool, wait at most close_timeout for acknowledgements, then disconnect.
        What stays unacknowledged (`unconfirmed`) is sent after the next start when the spool is a file.
        Later records are ignored."""
        if not self._closed:
            self._closed = True
            self._deadline = time.monotonic() + self.close_timeout
            self._closing.set()
            self._thread.join(self.close_timeout + 1.0)
            self.unconfirmed = self.shipper.close(max(0.1, self._deadline - time.monotonic()))
            if self.unconfirmed or self.dropped:
                log.info("event=logship_closed app=%s unconfirmed=%d dropped=%d spool=%s", self.app, self.unconfirmed,
                         self.dropped, self.spool_path or ":memory:")
        super().close()
