"""Alert lifecycle, pure: open, escalate in place, resolve with hysteresis. No IO, no clock.

One open alert per (sensor_id, metric, type). A worse severity escalates the open alert (it never
de-escalates: an alert shows the worst it has been until it resolves). It resolves only after
`clear_readings` consecutive CLEAR signals, or once it has been clear for `clear_seconds`; any HOLD or
alerting reading restarts the count, so a value oscillating around its bound keeps one alert open
instead of opening and closing one per reading.

Flapping: an alert that opened and resolved `flap_count` times within `flap_window_s` is not resolved the
last of those times: it is held open and marked flapping (a FLAPPING transition, stored and announced once),
so a condition that comes and goes is one alert, not a notification per cycle. While flapping, returns of the
condition produce no transition; it resolves once it has been clear and quiet (no alerting reading) for
`flap_window_s`.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Iterable

from .detectors import Signal

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
OPENED, ESCALATED, RESOLVED, FLAPPING = "opened", "escalated", "resolved", "flapping"
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
    flapping: bool = False  # held open after flapping (in memory only: the alerts table has no column for it)
    last_alerting: float | None = None  # event time of the latest reading that held the condition

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
    """The open alerts, their clear streaks and their recent resolutions (to see flapping)."""

    def __init__(self, clear_readings: int, clear_seconds: float, flap_count: int = 0, flap_window_s: float = 0.0):
        self.clear_readings = clear_readings
        self.clear_seconds = clear_seconds
        self.flap_count, self.flap_window_s = flap_count, flap_window_s
        self.open: dict[AlertKey, Alert] = {}  # changed only through _put and _drop (they keep the counts)
        # Keys of open alerts whose clear streak started (dict: ordered): what `due` looks at, so a timer tick
        # costs the alerts that are clearing, not every open one (100,000 offline sensors). Stale keys are
        # dropped there.
        self.clearing: dict[AlertKey, None] = {}
        self._by_type: dict[str, int] = {}
        # (sensor_id, metric) -> how many of its alerts are open (metric None: offline): what the evaluator asks
        # per series, without a set of every open alert built per batch.
        self.series_open: dict[tuple[str, str | None], int] = {}
        self.cycles: dict[AlertKey, deque[float]] = {}  # key -> event times of its latest resolutions

    def reconfigure(self, clear_readings: int, clear_seconds: float, flap_count: int = 0,
                    flap_window_s: float = 0.0) -> None:
        """Live reload: the hysteresis and flap rule for the next readings."""
        self.clear_readings, self.clear_seconds = clear_readings, clear_seconds
        if (flap_count, flap_window_s) != (self.flap_count, self.flap_window_s):
            self.cycles.clear()  # counted under another rule
        self.flap_count, self.flap_window_s = flap_count, flap_window_s

    def forget_sensors(self, sensors: set[str]) -> None:
        """Stop tracking these sensors' open alerts here (they stay open in the database for their next owner)."""
        for key in [k for k in self.open if k[0] in sensors]:
            self._drop(key)
        for key in [k for k in self.cycles if k[0] in sensors]:
            del self.cycles[key]

    def forget_closed(self, idle) -> None:
        """Drop the flap history of alert keys for which `idle(key)` holds and that have no open alert."""
        for key in [k for k in self.cycles if k not in self.open and idle(k)]:
            del self.cycles[key]

    def open_by_type(self) -> dict[str, int]:
        """How many alerts are open, per detector type."""
        return {t: n for t, n in self._by_type.items() if n}

    def open_of_type(self, type_: str) -> int:
        """How many alerts of this detector type are open."""
        return self._by_type.get(type_, 0)

    def _put(self, alert: Alert) -> Alert:
        old = self.open.get(alert.key)
        if old is not None:
            self._by_type[old.type] -= 1
        else:
            series = (alert.sensor_id, alert.metric)
            self.series_open[series] = self.series_open.get(series, 0) + 1
        self.open[alert.key] = alert
        self._by_type[alert.type] = self._by_type.get(alert.type, 0) + 1
        if alert.clear_since is not None:
            self.clearing[alert.key] = None
        return alert

    def _drop(self, key: AlertKey) -> None:
        alert = self.open.pop(key)
        self._by_type[alert.type] -= 1
        series = (key[0], key[1])
        left = self.series_open[series] - 1
        if left:
            self.series_open[series] = left
        else:
            del self.series_open[series]
        self.clearing.pop(key, None)

    def _clearing_from(self, alert: Alert, at: float) -> None:
        alert.clear_since = at
        self.clearing[alert.key] = None

    def load(self, alerts: Iterable[Alert]) -> None:
        """Open alerts from the database (restart): they continue, they are not opened again."""
        for a in alerts:
            self._put(a)

    def observe(self, sensor_id: str, metric: str | None, type_: str, signal: Signal, at: float,
                value: float | None = None) -> Transition | None:
        """Apply one detector's signal for one reading; returns what changed, if anything."""
        key = (sensor_id, metric, type_)
        alert = self.open.get(key)
        if signal.severity is not None:
            if alert is None:
                alert = self._put(Alert(sensor_id, metric, type_, signal.severity, at, last_alerting=at))
                return Transition(OPENED, alert, signal.severity, at, value, signal.detail)
            alert.clear_count, alert.clear_since = 0, None
            if alert.last_alerting is None or at > alert.last_alerting:
                alert.last_alerting = at
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
            self._clearing_from(alert, at)
        alert.clear_count += 1
        if self._cleared(alert, at):
            return self.resolve(key, at, value, signal.detail)
        return None

    def _quiet(self, alert: Alert, now: float) -> bool:
        """A flapping alert resolves only once no reading has held its condition for the flap window."""
        return not alert.flapping or alert.last_alerting is None or now - alert.last_alerting >= self.flap_window_s

    def _cleared(self, alert: Alert, now: float) -> bool:
        if not self._quiet(alert, now):
            return False
        n, t = self.clear_readings, self.clear_seconds
        if n == 0 and t == 0:
            return True
        if n > 0 and alert.clear_count >= n:
            return True
        return t > 0 and alert.clear_since is not None and now - alert.clear_since >= t

    def resolve(self, key: AlertKey, at: float, value: float | None = None, detail: str = "") -> Transition | None:
        """Resolve at once (an offline sensor that reports again, or a clear condition met), unless this
        resolution makes the alert flapping (then it is held open: FLAPPING) or it is flapping and not yet
        quiet for the flap window (then nothing happens until it is)."""
        alert = self.open.get(key)
        if alert is None:
            return None
        if alert.flapping:
            if not self._quiet(alert, at):
                if alert.clear_since is None:
                    self._clearing_from(alert, at)  # clear from now on: the timer resolves it once quiet
                return None
            self.cycles.pop(key, None)
        elif self.flap_count > 0:
            recent = self.cycles.get(key)
            if recent is None:
                recent = self.cycles[key] = deque(maxlen=self.flap_count)
            recent.append(at)
            while recent and recent[0] < at - self.flap_window_s:
                recent.popleft()
            if len(recent) >= self.flap_count:
                alert.flapping = True
                if alert.clear_since is None:
                    self._clearing_from(alert, at)
                return Transition(FLAPPING, alert, alert.severity, at, value,
                                  f"opened and resolved {len(recent)} times within {self.flap_window_s:g} s")
        self._drop(key)
        return Transition(RESOLVED, alert, alert.severity, at, value, detail)

    def due(self, now: float) -> list[Transition]:
        """Alerts that have been clear for `clear_seconds`, or flapping ones clear and quiet for the flap window,
        by `now`, although no reading said so yet."""
        keys = []
        for k in list(self.clearing):
            a = self.open.get(k)
            if a is None or a.clear_since is None:
                del self.clearing[k]  # resolved, or alerting again since
            elif ((a.flapping and self._quiet(a, now) and now - a.clear_since >= self.clear_seconds)
                  or (not a.flapping and self.clear_seconds > 0 and now - a.clear_since >= self.clear_seconds)):
                keys.append(k)
        return [t for t in (self.resolve(k, now) for k in keys) if t is not None]

    def forget(self, still_open_ids: set[int]) -> list[Alert]:
        """Drop stored alerts that are no longer open in the database (resolved by an operator)."""
        gone = [a for a in self.open.values() if a.id is not None and a.id not in still_open_ids]
        for a in gone:
            self._drop(a.key)
        return gone
