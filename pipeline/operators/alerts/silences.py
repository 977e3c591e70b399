"""Which alert transitions are not to be notified, and why: acknowledged, snoozed, in a maintenance window.

A pure core: no IO and no clock (`now` is passed in). The state is snoozes (of one alert, or of every alert
of a sensor and/or a rule = metric and/or detector type, until a time), acknowledged alert ids with the
severity they had when acknowledged, and the maintenance windows of the config. An acknowledgement hides
the state that was acknowledged, not a worse one: an acknowledged warning that escalates
to critical is notified, and so are that alert's later transitions at the worse severity. The database holds snoozes and acknowledgements (they survive a
restart): `silence_sync.py` loads them at start and on every alert tick (so a change made through another
instance's dashboard arrives too), and the dashboard's API, after writing the database, tells this object at
once (`snooze`, `unsnooze`, `acknowledge`). A refresh replaces the state with what the database said, then
replays the changes told since its query began, so neither side loses the other's.

Readers (`silenced`, from any thread) take no lock: they read immutable snapshots swapped whole; writers
serialise on a small lock so two changes at once never lose one.
"""
from __future__ import annotations

import fnmatch
import re
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence
from zoneinfo import ZoneInfo

from ...config.alerting import MaintenanceWindow, iso_epoch
from ...config.cron import Cron

ACKNOWLEDGED, SNOOZED, MAINTENANCE = "acknowledged", "snoozed", "maintenance"
_RANK = {"info": 0, "warning": 1, "critical": 2}
_ANY = float("inf")  # an acknowledgement without a known severity hides every state


def severity_rank(severity: str | None) -> float:
    """info < warning < critical; None (not known): every severity."""
    return _ANY if severity is None else _RANK.get(severity, 0)


@dataclass(frozen=True)
class Snooze:
    """A snooze until `until` (epoch s): of one alert (`alert_id`), or of every alert whose sensor, metric and
    type equal the fields given (at least one of them; None matches anything)."""

    id: int
    until: float
    alert_id: int | None = None
    sensor_id: str | None = None
    metric: str | None = None
    type: str | None = None

    def matches(self, alert_id: int | None, sensor_id: str | None, metric: str | None, type_: str | None) -> bool:
        if self.alert_id is not None:
            return alert_id == self.alert_id
        return ((self.sensor_id is None or self.sensor_id == sensor_id) and (self.metric is None or self.metric == metric)
                and (self.type is None or self.type == type_))


class MaintenanceMatcher:
    """A maintenance window compiled from its config: which sensors, and when."""

    def __init__(self, cfg: MaintenanceWindow):
        self.name = cfg.name
        self.sensors = re.compile(fnmatch.translate(cfg.sensors)) if cfg.sensors else None
        self.location = cfg.location or None
        self.start = iso_epoch(cfg.start) if cfg.start else None
        self.end = iso_epoch(cfg.end) if cfg.end else None
        self.cron = Cron.parse(cfg.cron) if cfg.cron else None
        self.duration_s = cfg.duration_s
        self.zone = ZoneInfo(cfg.timezone)

    def covers(self, sensor_id: str | None, location: str | None) -> bool:
        """True if the sensor is one this window is about (glob on its id, and/or its location)."""
        if self.sensors is not None and (sensor_id is None or not self.sensors.fullmatch(sensor_id)):
            return False
        return self.location is None or location == self.location

    def active(self, now: float) -> bool:
        if self.cron is None:
            return self.start is not None and self.end is not None and self.start <= now < self.end
        start = self.cron.last_start(now, self.zone, self.duration_s)
        return start is not None and now < start + self.duration_s


class Silences:
    """Snoozes, acknowledgements and maintenance windows; `silenced(payload, now)` says whether (and why) an
    alert transition is not to be notified. `locate(sensor_id)` gives a sensor's location, for windows by
    location (None: such windows match no sensor)."""

    def __init__(self, windows: Sequence[MaintenanceWindow] = (), locate: Callable[[str], str | None] | None = None):
        self.locate = locate
        self._windows: tuple[MaintenanceMatcher, ...] = tuple(MaintenanceMatcher(w) for w in windows)
        self._snoozes: dict[int, Snooze] = {}
        self._acknowledged: dict[int, float] = {}  # alert id -> rank of the severity acknowledged (never mutated)
        self._lock = threading.Lock()
        self._seq = 0
        self._journal: list[tuple[int, str, object]] = []  # changes told since the oldest refresh began

    # -- the question --------------------------------------------------------------------------------
    def silenced(self, payload: dict, now: float) -> str | None:
        """"acknowledged", "snoozed", "maintenance" or None (notify) for an alert transition, as the alert store
        publishes it: {"event", "alert_id", "sensor_id", "metric", "type", "severity", ...}. Every event of an
        acknowledged alert at the severity acknowledged or below is silenced (flapping, resolution: stored, not
        announced again); an escalation past it is not silenced by the acknowledgement."""
        alert_id, sensor_id = payload.get("alert_id"), payload.get("sensor_id")
        metric, type_ = payload.get("metric") or None, payload.get("type")
        acked = self._acknowledged.get(alert_id) if alert_id is not None else None
        if acked is not None and severity_rank(payload.get("severity") or "info") <= acked:
            return ACKNOWLEDGED
        if self.snoozed_until(alert_id, sensor_id, metric, type_, now) is not None:
            return SNOOZED
        if self.maintenance(sensor_id, now) is not None:
            return MAINTENANCE
        return None

    def snoozed_until(self, alert_id: int | None, sensor_id: str | None, metric: str | None, type_: str | None,
                      now: float) -> float | None:
        """The latest end of the snoozes covering this alert at `now`, or None."""
        ends = [s.until for s in self._snoozes.values() if s.until > now and s.matches(alert_id, sensor_id, metric, type_)]
        return max(ends) if ends else None

    def maintenance(self, sensor_id: str | None, now: float) -> str | None:
        """The name of a maintenance window covering this sensor at `now`, or None."""
        windows = self._windows
        if not windows:
            return None
        location = self.locate(sensor_id) if (self.locate is not None and sensor_id is not None) else None
        for w in windows:
            if w.covers(sensor_id, location) and w.active(now):
                return w.name
        return None

    def snoozes(self, now: float) -> list[Snooze]:
        """The snoozes in force at `now`, ending soonest first."""
        return sorted((s for s in self._snoozes.values() if s.until > now), key=lambda s: (s.until, s.id))

    def locate_with(self, locate: Callable[[str], str | None]) -> None:
        """Where sensors are, for windows by location: the alert operator knows (latest reading, registry)."""
        self.locate = locate

    # -- changes ---------------------------------------------------------------------------------------
    def reconfigure(self, windows: Sequence[MaintenanceWindow]) -> None:
        """Live reload: the maintenance windows of the new config."""
        self._windows = tuple(MaintenanceMatcher(w) for w in windows)

    def snooze(self, snooze: Snooze) -> None:
        self._change("snooze", snooze)

    def unsnooze(self, snooze_id: int) -> None:
        self._change("unsnooze", snooze_id)

    def acknowledge(self, alert_id: int, severity: str | None = None) -> None:
        """The alert was acknowledged at `severity` (None: whatever it becomes)."""
        self._change("ack", (alert_id, severity))

    def mark(self) -> int:
        """Call before querying the database for `replace`: changes told after this are replayed onto its result."""
        with self._lock:
            return self._seq

    def replace(self, snoozes: Iterable[Snooze], acknowledged: Iterable[int | tuple[int, str | None]],
                since: int) -> None:
        """The state the database holds (active snoozes, acknowledged alerts as ids or (id, severity when
        acknowledged)), plus the changes told after `mark()` returned `since` (their rows may have been
        committed after the query read)."""
        with self._lock:
            self._journal = [e for e in self._journal if e[0] > since]
            table, acks = {s.id: s for s in snoozes}, {}
            for entry in acknowledged:
                alert_id, severity = entry if isinstance(entry, tuple) else (entry, None)
                acks[alert_id] = severity_rank(severity)
            for _seq, op, arg in self._journal:
                self._apply(table, acks, op, arg)
            self._snoozes, self._acknowledged = table, acks

    def _change(self, op: str, arg: object) -> None:
        with self._lock:
            self._seq += 1
            self._journal.append((self._seq, op, arg))
            table, acks = dict(self._snoozes), dict(self._acknowledged)
            self._apply(table, acks, op, arg)
            self._snoozes, self._acknowledged = table, acks

    @staticmethod
    def _apply(table: dict[int, Snooze], acks: dict[int, float], op: str, arg) -> None:
        if op == "snooze":
            table[arg.id] = arg
        elif op == "unsnooze":
            table.pop(arg, None)
        elif op == "ack":
            acks[arg[0]] = severity_rank(arg[1])
