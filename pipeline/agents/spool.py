"""A bounded, crash-safe queue of outgoing MQTT messages on disk, shared by the system agent and the log handler.

SQLite in WAL mode (stdlib sqlite3): each append is one transaction, so a crash (kill -9, power loss with
synchronous=FULL) leaves every committed message in order and none half-written. A message is removed only
after the broker acknowledged it (QoS 1 PUBACK), by `SpooledPublisher` below; beyond `max_bytes` the oldest
messages not yet handed to the connection are dropped and counted (the count survives restarts too).
The database and its WAL together stay within `max_bytes` plus the pages of about three writes (the WAL holds
the last write's pages until its checkpoint): writers keep each append small.
One process owns a spool file at a time (SQLite exclusive locking): a second opener gets `SpoolBusy`.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Sequence

from ..runtime.supervisor import Spawn, plain_thread
from .publisher import MqttPublisher

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
MIN_MAX_BYTES = 64 * 1024
# What SQLite adds per row beyond topic and payload (record header, b-tree cell, page slack), so that the
# counted size tracks the file's size: measured at 30 to 60 bytes for payloads of 100 B to 8 KB.
ROW_OVERHEAD = 64
_WAL_MAX = 1024 * 1024  # the WAL is checkpointed and truncated at an eighth of max_bytes, at most this


class SpoolBusy(RuntimeError):
    """Another process (or another object in this one) owns the spool file."""


def state_dir() -> Path:
    """Where state lives: $STATE_DIRECTORY (systemd's StateDirectory=), else $XDG_STATE_HOME/realtime-pipeline,
    else ~/.local/state/realtime-pipeline."""
    systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "realtime-pipeline"


def spool_path(configured: str, default_name: str) -> str:
    """The configured path, or `default_name` in the state directory when it is empty."""
    return configured or str(state_dir() / default_name)


class Spool:
    """Ordered (topic, payload) messages in one SQLite file; `path=None` keeps them in memory (lost at exit)."""

    def __init__(self, path: str | None, max_bytes: int = DEFAULT_MAX_BYTES, synchronous: str = "FULL"):
        if max_bytes < MIN_MAX_BYTES:
            raise ValueError(f"max_bytes: at least {MIN_MAX_BYTES}, got {max_bytes}")
        self.path = path
        self.max_bytes = max_bytes
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # timeout=0: a file held by another process is reported at once, never waited on.
        self._db = sqlite3.connect(path or ":memory:", timeout=0, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        try:
            self._open(synchronous)
        except sqlite3.OperationalError as err:
            self._db.close()
            if "locked" in str(err):
                raise SpoolBusy(f"spool {path}: in use by another process (give each process its own file)") from None
            raise
        except sqlite3.DatabaseError:
            self._db.close()
            raise

    def _open(self, synchronous: str) -> None:
        db = self._db
        # Exclusive before WAL: no shared-memory index, and the lock taken below is held until close.
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        self._page_size = db.execute("PRAGMA page_size").fetchone()[0]
        wal = min(_WAL_MAX, self.max_bytes // 8)
        db.execute(f"PRAGMA wal_autocheckpoint={max(4, wal // self._page_size)}")
        db.execute(f"PRAGMA journal_size_limit={wal}")
        self._db_budget = self.max_bytes - wal  # the database file and its WAL together stay within max_bytes
        db.execute("BEGIN IMMEDIATE")
        # AUTOINCREMENT: ids never go back, even when the queue empties, so "after id N" stays in order.
        db.execute("CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
                   "payload BLOB NOT NULL)")
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        db.execute("INSERT OR IGNORE INTO meta VALUES ('dropped', 0)")
        count, size = db.execute(f"SELECT count(*), coalesce(sum(length(CAST(topic AS BLOB)) + length(payload) + "
                                 f"{ROW_OVERHEAD}), 0) FROM spool").fetchone()
        db.execute("COMMIT")
        self._count, self._bytes = count, size
        self._dropped = 0

    @property
    def count(self) -> int:
        """Messages waiting."""
        return self._count

    @property
    def bytes(self) -> int:
        """Their size as counted against max_bytes."""
        return self._bytes

    @property
    def dropped(self) -> int:
        """Messages dropped (oldest first) to stay within max_bytes since this object opened the file."""
        return self._dropped

    def dropped_total(self) -> int:
        """The same over the file's whole life (kept in the file)."""
        with self._lock:
            return self._db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()[0]

    def append(self, messages: Sequence[tuple[str, bytes]], keep_upto: int = 0) -> int:
        """Store `messages` in one transaction, then drop the oldest while the file is over its bound, sparing ids
        up to `keep_upto` (already handed to the connection) while others can go. Returns how many were dropped."""
        added = sum(len(t.encode("utf-8")) + len(p) + ROW_OVERHEAD for t, p in messages)
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT INTO spool (topic, payload) VALUES (?, ?)", messages)
                count, size = self._count + len(messages), self._bytes + added
                dropped = 0
                # The bound is on pages in use, not on counted bytes: page slack and overflow pages make the
                # file up to a third larger than its contents, and free pages are reused before the file grows.
                while (over := self._pages_used() - self._db_budget) > 0:
                    rows, freed = self._drop_oldest(max(over, 1), keep_upto)
                    if not rows:
                        break
                    dropped, count, size = dropped + rows, count - rows, size - freed
                if dropped:
                    db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped'", (dropped,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._count, self._bytes = count, size
            self._dropped += dropped
            return dropped

    def _pages_used(self) -> int:
        """Bytes of the database file in use (free pages excluded)."""
        pages = self._db.execute("PRAGMA page_count").fetchone()[0] - self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return pages * self._page_size

    def _drop_oldest(self, excess: int, keep_upto: int) -> tuple[int, int]:
        """Delete the oldest rows adding up to at least `excess` counted bytes: (rows, bytes)."""
        rows = freed = 0
        for spare in (keep_upto, 0):
            if freed >= excess:
                break
            cut = None
            for rowid, size in self._db.execute(
                    f"SELECT id, length(CAST(topic AS BLOB)) + length(payload) + {ROW_OVERHEAD} FROM spool "
                    "WHERE id > ? ORDER BY id", (spare,)):
                cut, rows, freed = rowid, rows + 1, freed + size
                if freed >= excess:
                    break
            if cut is not None:
                self._db.execute("DELETE FROM spool WHERE id > ? AND id <= ?", (spare, cut))
        return rows, freed

    def read(self, after: int, limit: int) -> list[tuple[int, str, bytes]]:
        """Up to `limit` messages with ids above `after`, oldest first: (id, topic, payload)."""
        with self._lock:
            return self._db.execute("SELECT id, topic, payload FROM spool WHERE id > ? ORDER BY id LIMIT ?",
                                    (after, limit)).fetchall()

    def remove(self, ids: Sequence[int]) -> int:
        """Delete acknowledged messages (ids already gone are ignored). Returns how many were deleted."""
        if not ids:
            return 0
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                gone = 0
                freed = 0
                for start in range(0, len(ids), 500):
                    chunk = list(ids[start:start + 500])
                    marks = ",".join("?" * len(chunk))
                    n, size = db.execute(f"SELECT count(*), coalesce(sum(length(CAST(topic AS BLOB)) + length(payload) "
                                         f"+ {ROW_OVERHEAD}), 0) FROM spool WHERE id IN ({marks})", chunk).fetchone()
                    db.execute(f"DELETE FROM spool WHERE id IN ({marks})", chunk)
                    gone, freed = gone + n, freed + size
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._count -= gone
            self._bytes -= freed
            return gone

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SpooledPublisher:
    """`publish` writes to the spool; a pump thread hands spooled messages to MQTT in order, at most `window`
    unacknowledged at a time, and removes each once the broker acknowledged it. What is still spooled at
    exit (or at a crash) is sent after the next start: at least once, in order."""

    def __init__(self, publisher: MqttPublisher, spool: Spool, name: str = "spool", window: int = 100,
                 report_interval_s: float = 60.0, logger: logging.Logger | None = None):
        self.publisher = publisher
        self.spool = spool
        self.name = name
        self.window = window
        self.report_interval_s = report_interval_s
        self.log = logger or log
        self.failed = 0  # messages that could not be written to the spool (disk full, I/O error): lost
        self._inflight: dict[int, int] = {}  # paho message id -> spool id, handed over and not acknowledged
        self._last = 0  # highest spool id handed to paho
        self._acks: deque[int] = deque()  # message ids acknowledged, filled by paho's thread
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._thread = None
        publisher.on_ack = self._on_ack

    # -- what the publishing side calls -------------------------------------------------------------
    def start(self, spawn: Spawn = plain_thread) -> None:
        self.publisher.start()
        self._thread = spawn(f"{self.name}-pump", self._run)

    @property
    def thread_ident(self) -> int | None:
        return self._thread.ident if self._thread is not None else None

    def publish(self, topic: str, payload: bytes) -> bool:
        """Spool one message. False if the spool could not take it (the caller counts it as dropped)."""
        return self.publish_many([(topic, payload)])

    def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> bool:
        """Spool messages in one transaction; False (and counted in `failed`) if the disk refused them."""
        try:
            self.spool.append(messages, keep_upto=self._last)
        except sqlite3.Error as err:
            self.failed += len(messages)
            self.log.error("event=spool_write_failed source=%s messages=%d error=%r", self.name, len(messages),
                           str(err)[:200])
            return False
        with self._wake:
            self._wake.notify_all()
        return True

    @property
    def acked(self) -> int:
        return self.publisher.acked

    @property
    def pending(self) -> int:
        """Messages spooled and not yet acknowledged."""
        return self.spool.count

    @property
    def dropped(self) -> int:
        """Messages lost: dropped oldest beyond the bound, or refused by the disk."""
        return self.spool.dropped + self.failed

    def status(self) -> dict:
        """The backlog as the agent and the handler report it."""
        return {"queued": self.spool.count, "bytes": self.spool.bytes, "dropped": self.dropped,
                "connected": self.publisher.connected.is_set()}

    def wait(self, timeout: float) -> bool:
        """Wait until the spool is empty (everything acknowledged); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while self.spool.count:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._wake.wait(min(left, 0.1))
        return True

    def close(self, timeout: float = 5.0) -> int:
        """Wait up to `timeout` for acknowledgements, then stop. Returns the messages still spooled (kept on disk
        for the next start when the spool is a file)."""
        self.wait(timeout)
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(2.0)
        self.publisher.close(0.0)
        left = self.spool.count
        self.spool.close()
        return left

    # -- the pump ---------------------------------------------------------------------------------
    def _on_ack(self, mid: int) -> None:
        # paho's thread: only note it; the pump maps and deletes (publish() returns the mid to the pump).
        self._acks.append(mid)
        with self._wake:
            self._wake.notify_all()

    def _run(self) -> None:
        next_report = time.monotonic() + self.report_interval_s
        while not self._stop.is_set():
            try:
                self._settle_acks()
                self._top_up()
            except sqlite3.Error as err:
                if self._stop.is_set():  # closed under it at shutdown
                    return
                # A disk error: what is spooled stays; try again rather than stop sending for good.
                self.log.error("event=spool_read_failed source=%s error=%r", self.name, str(err)[:200])
                self._stop.wait(1.0)
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + self.report_interval_s
                if self.spool.count or self.dropped:
                    s = self.status()
                    self.log.info("event=spool_backlog source=%s queued=%d bytes=%d dropped=%d connected=%s",
                                  self.name, s["queued"], s["bytes"], s["dropped"], s["connected"])
            with self._wake:
                if not self._acks and (len(self._inflight) >= self.window or not self._has_new()):
                    self._wake.wait(0.5)

    def _has_new(self) -> bool:
        return bool(self.spool.read(self._last, 1))

    def _settle_acks(self) -> None:
        done = []
        while self._acks:
            rowid = self._inflight.pop(self._acks.popleft(), None)
            if rowid is not None:
                done.append(rowid)
        if done:
            self.spool.remove(done)
            with self._wake:
                self._wake.notify_all()

    def _top_up(self) -> None:
        room = self.window - len(self._inflight)
        if room <= 0:
            return
        for rowid, topic, payload in self.spool.read(self._last, room):
            mid = self.publisher.send(topic, payload)
            if mid is None:  # paho's own queue is full: try again after acknowledgements
                return
            self._inflight[mid] = rowid
            self._last = rowid


def open_spooled(publisher: MqttPublisher, path: str | None, max_bytes: int, name: str,
                 on_error: Callable[[Exception], None] | None = None, **options) -> SpooledPublisher:
    """A SpooledPublisher over the spool at `path`. When that file cannot be used (owned by another process,
    not writable, not a spool) the error propagates, or with `on_error` the messages are kept in memory only."""
    try:
        spool = Spool(path, max_bytes)
    except (SpoolBusy, OSError, sqlite3.DatabaseError) as err:
        if on_error is None or path is None:
            raise
        on_error(err)
        spool = Spool(None, max_bytes)
    return SpooledPublisher(publisher, spool, name, **options)
