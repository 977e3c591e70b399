"""One single-instance daemon per consumer group: a PostgreSQL advisory lock keyed by the group id.

In single-instance mode (kafka.assignment: single) the daemon assigns itself every partition of the
raw topic without the group protocol, so nothing in Kafka stops a second daemon from consuming the same
partitions: both would store, commit over each other and evaluate the same sensors. The lock does. It
lives on its own connection for the daemon's lifetime; if that connection drops (PostgreSQL restarted),
the keeper takes the lock again, and fails the daemon if another one got it meanwhile.
"""
from __future__ import annotations

import logging
import threading

import psycopg

from ..config import PostgresConfig, Secret
from ..clients.postgres import conninfo, describe

log = logging.getLogger(__name__)

LOCK_SPACE = "realtime-pipeline"  # first key: our own namespace among the database's advisory locks
TRY_LOCK = "SELECT pg_try_advisory_lock(hashtext(%s), hashtext(%s))"
# Who holds it: the backend holding our lock, named by the application_name the holder connected with.
HOLDER = ("SELECT a.application_name, a.client_addr::text, a.backend_start FROM pg_locks l "
          "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
          "AND l.classid::int = hashtext(%s) AND l.objid::int = hashtext(%s) AND l.objsubid = 2 LIMIT 1")
APP_PREFIX = "realtime-pipeline single-instance "


class AlreadyConsumed(Exception):
    """Another single-instance daemon holds this consumer group's lock."""


class SingleInstanceLock:
    """The advisory lock of one consumer group; `acquire()` once, then `keep(stop)` in a thread."""

    def __init__(self, pg: PostgresConfig, password: Secret, group: str, topic: str, instance_id: str,
                 check_interval_s: float = 5.0):
        self.pg, self.password = pg, password
        self.group, self.topic, self.instance_id = group, topic, instance_id
        self.check_interval_s = check_interval_s
        self._conn: psycopg.Connection | None = None

    def _connect(self) -> psycopg.Connection:
        params = conninfo(self.pg, self.password)
        params["application_name"] = (APP_PREFIX + self.instance_id)[:63]
        return psycopg.connect(**params, autocommit=True)

    def _take(self) -> None:
        conn = self._connect()
        if conn.execute(TRY_LOCK, (LOCK_SPACE, self.group)).fetchone()[0]:
            self._conn = conn
            return
        row = conn.execute(HOLDER, (LOCK_SPACE, self.group)).fetchone()
        conn.close()
        holder = "unknown"
        if row is not None:
            name = row[0] or ""
            holder = (f"instance {name[len(APP_PREFIX):]!r}" if name.startswith(APP_PREFIX) else repr(name)) + \
                     f" connected from {row[1] or 'a local socket'} since {row[2]:%Y-%m-%d %H:%M:%S}"
        raise AlreadyConsumed(
            f"another single-instance daemon ({holder}) already consumes topic {self.topic!r} as consumer group "
            f"{self.group!r} (lock in {describe(self.pg)}). Stop it, give this one another kafka.consumer_group, "
            f"or scale out: set mqtt.shared_group (kafka.assignment: group) on every instance")

    def acquire(self) -> None:
        """Take the lock or raise AlreadyConsumed; connection errors propagate (the caller retries them)."""
        self._take()
        log.info("event=single_instance_lock_taken group=%s", self.group)

    def keep(self, stop: threading.Event) -> None:
        """Check the lock's connection; after an outage take the lock again (AlreadyConsumed if someone else did)."""
        while not stop.wait(self.check_interval_s):
            try:
                if self._conn is None or self._conn.closed:
                    self._take()
                    log.info("event=single_instance_lock_retaken group=%s", self.group)
                else:
                    self._conn.execute("SELECT 1")
            except AlreadyConsumed:
                raise
            except psycopg.Error as err:  # PostgreSQL away: the lock went with the connection; retake it later
                log.warning("event=single_instance_lock_lost group=%s error=%r note=retaking", self.group, str(err)[:200])
                self.release()

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()  # closing the session releases its advisory locks
            except psycopg.Error:
                pass
