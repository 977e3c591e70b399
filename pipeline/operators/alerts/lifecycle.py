"""Alert lifecycle, pure: open, escalate in place, resolve with hysteresis. No IO, no clock.

One open alert per (sensor_id, metric, type). A worse severity escalates the open alert (it never
de-escalates: an alert shows the worst it has been until it resolves). It resolves only after
`clear_readings` consecutive CLEAR signals, or once it has been clear for `clear_seconds`; any HOLD or
alerting reading restarts the count, so a value oscillating around its bound keeps one alert open
instead of opening and closing one per reading.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from .detectors import Signal

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
OPENED, ESCALATED, RESOLVED = "opened", "escalated", "resolved"
AlertKey = tuple[str, str | None, str]  # (sensor_id, metric or None, type)


@dataclass(slots=True)
class Alert:
    """An open alert; `id` is the database row once it is stored."""

    sensor_id: str
    metric: str | None
    type: str
    severity: str
    opened_at: float
    message: str = ""
    id: int | None = None
    clear_count: int = 0
    clear_since: float | None = None

    @property
    def key(self) -> AlertKey:
        """(sensor_id, metric, type): at most one open alert per key."""
        return (self.sensor_id, self.metric, self.type)


@dataclass(slots=True)
class Transition:
    """Something that happened to an alert, to be stored and announced."""

    event: str
    alert: Alert
    severity: str
    at: float  # epoch seconds: the event time of the reading that caused it (the clock, for timers)
    value: float | None = None
    detail: str = ""
    previous: str | None = None  # the severity before an escalation
    message: str = ""
    context: dict = field(default_factory=dict)  # sensor type/location, for registering an unknown sensor
    stored: bool = False  # written to PostgreSQL (a retried write skips it)
    published: bool = False  # added to the Redis stream


class AlertBook:
    """The open alerts and their clear streaks."""

    def __init__(self, clear_readings: int, clear_seconds: float):
        self.clear_readings = clear_readings
        self.clear_seconds = clear_seconds
        self.open: dict[AlertKey, Alert] = {}

    def reconfigure(self, clear_readings: int, clear_seconds: float) -> None:
        """Live reload: the hysteresis for the next readings."""
        self.clear_readings, self.clear_seconds = clear_readings, clear_seconds

    def forget_sensors(self, sensors: set[str]) -> None:
        """Stop tracking these sensors' open alerts here (they stay open in the database for their next owner)."""
        for key in [k for k in self.open if k[0] in sensors]:
            del self.open[key]

    def open_by_type(self) -> dict[str, int]:
        """How many alerts are open, per detector type."""
        counts: dict[str, int] = {}
        for a in self.open.values():
            counts[a.type] = counts.get(a.type, 0) + 1
        return counts

    def load(self, alerts: Iterable[Alert]) -> None:
        """Open alerts from the database (restart): they continue, they are not opened again."""
        for a in alerts:
            self.open[a.key] = a

    def observe(self, sensor_id: str, metric: str | None, type_: str, signal: Signal, at: float,
                value: float | None = None) -> Transition | None:
        """Apply one detector's signal for one reading; returns what changed, if anything."""
        key = (sensor_id, metric, type_)
        alert = self.open.get(key)
        if signal.severity is not None:
            if alert is None:
                alert = self.open[key] = Alert(sensor_id, metric, type_, signal.severity, at)
                return Transition(OPENED, alert, signal.severity, at, value, signal.detail)
            alert.clear_count, alert.clear_since = 0, None
            if SEVERITY_RANK[signal.severity] > SEVERITY_RANK[alert.severity]:
                previous, alert.severity = alert.severity, signal.severity
                return Transition(ESCALATED, alert, signal.severity, at, value, signal.detail, previous)
            return None
        if alert is None:
            return None
        if not signal.clear:
            alert.clear_count, alert.clear_since = 0, None
            return None
        if alert.clear_since is None:
            alert.clear_since = at
        alert.clear_count += 1
        if self._cleared(alert, at):
            return self.resolve(key, at, value, signal.detail)
        return None

    def _cleared(self, alert: Alert, now: float) -> bool:
        n, t = self.clear_readings, self.clear_seconds
        if n == 0 and t == 0:
            return True
        if n > 0 and alert.clear_count >= n:
            return True
        return t > 0 and alert.clear_since is not None and now - alert.clear_since >= t

    def resolve(self, key: AlertKey, at: float, value: float | None = None, detail: str = "") -> Transition | None:
        """Resolve at once (an offline sensor that reports again, or a clear condition met)."""
        alert = self.open.pop(key, None)
        if alert is None:
            return None
        return Transition(RESOLVED, alert, alert.severity, at, value, detail)

    def due(self, now: float) -> list[Transition]:
        """Alerts that have been clear for `clear_seconds` by `now` although no reading said so yet."""
        if self.clear_seconds <= 0:
            return []
        keys = [k for k, a in self.open.items() if a.clear_since is not None and now - a.clear_since >= self.clear_seconds]
        return [t for t in (self.resolve(k, now) for k in keys) if t is not None]

    def forget(self, still_open_ids: set[int]) -> list[Alert]:
        """Drop stored alerts that are no longer open in the database (resolved by an operator)."""
        gone = [a for a in self.open.values() if a.id is not None and a.id not in still_open_ids]
        for a in gone:
            del self.open[a.key]
        return gone
