"""Runner: rereads the `sensors` table every `limits.registry_refresh_s` and offers it to the limit filter.

Polling first, not a lookup on a miss: a miss is what an unknown or hostile publisher makes at will, so while
the table fits the read a miss costs the daemon nothing, while a periodic primary-key scan of at most `limits.max_sensors` rows has a fixed cost
(measured: 0.15-0.17 s for 100,000 sensors on the 2-core development box, most of it building the dict in
Python, so about 1.5 % of a core at the 10 s default) and also brings relabels and removals. A sensor added while the daemon runs is
therefore accepted within one interval; readings of it before that are refused as unknown_sensor (known mode).
A failed read is logged and tried again at the next interval: the filter keeps the snapshot it has.
When the table is larger than the limit, the same read also rereads the sensors past it that the filter holds
(its `extra_ids`, one `= ANY` statement), and `RegistryLookup` is the filter's lookup of a miss, bounded per
second (registry.py): a registered sensor past the read is not refused for being there.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import psycopg

from ...stages.limits import LimitFilter, Labels, read_registered, read_these

log = logging.getLogger(__name__)


class RegistryRefresh:
    """Every `interval_s`, `read_registered` through a fresh connection from `connect`, handed to `limits.offer`."""

    def __init__(self, connect: Callable[[], psycopg.Connection], limits: LimitFilter, interval_s: float):
        self.connect = connect
        self.limits = limits
        self.interval_s = interval_s
        self.failures = 0

    def run_once(self) -> int:
        """One read of the table, offered to the filter; returns how many sensors it holds (up to the limit)."""
        limit = self.limits.registry.max_sensors
        with self.connect() as conn:
            snapshot = read_registered(conn, limit)
            complete = len(snapshot) < limit
            extras = {} if complete else read_these(conn, [s for s in self.limits.extra_ids if s not in snapshot])
        self.limits.offer(snapshot, complete, extras)
        return len(snapshot) + len(extras)

    def run(self, stop: threading.Event) -> None:
        """Worker body, until `stop` is set."""
        while not stop.wait(self.interval_s):
            started = time.monotonic()
            try:
                n = self.run_once()
            except (psycopg.Error, OSError) as err:
                self.failures += 1
                log.warning("event=registry_refresh_failed error=%r", str(err)[:300])
                continue
            log.debug("event=registry_refreshed sensors=%d seconds=%.3f", n, time.monotonic() - started)


class RegistryLookup:
    """The limit filter's lookup of ids past the table read, on the consumer thread: one connection of its own
    (opened on first use, autocommit), closed on a failure so the next lookup connects afresh."""

    def __init__(self, connect: Callable[[], psycopg.Connection]):
        self.connect = connect
        self.conn: psycopg.Connection | None = None

    def __call__(self, sensor_ids: list) -> dict[str, Labels]:
        if self.conn is None or self.conn.closed:
            self.conn = self.connect()
        try:
            return read_these(self.conn, sensor_ids)
        except (psycopg.Error, OSError):
            self.close()
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
