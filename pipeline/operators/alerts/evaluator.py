"""The alert evaluator's pure core: readings and the clock in, alert transitions out.

Detectors judge each reading against the rules of its sensor and metric, the alert book turns their
signals into transitions (opened, escalated, flapping, resolved), and a timer finds silent sensors and alerts clear
for long enough. No IO, no threads, no locks: the runner (runner.py) owns those, and the store
(pipeline/operators/alerts/store.py) writes what comes out.

State per series (its detectors' history in one array, cached rules, closed alerts' flap history) is released by
`evict_idle` once the series has had no reading for `limits.state_idle_s`, unless an alert of it is open; a series
that returns starts its history again, as after a restart. A sensor whose `offline` alert has been open for
longer than `limits.state_idle_s` (so silent for its offline limit and that long) is released whole, open alerts
included (they stay open in PostgreSQL): `released_open` says so, and the runner loads the open alerts of a
sensor it sees for the first time from then on, so the returning reading resolves it.
"""
from __future__ import annotations

import sys
from array import array
from typing import Callable, Iterable, Sequence

from ...records import Reading, SensorOffline
from ...registry import detectors as registry
from . import rate  # noqa: F401  (registers the rate detector beside those of detectors.py)
from .detectors import SEEN, Signal, new_series, offline, offline_tracked, seen_at
from .lifecycle import ESCALATED, FLAPPING, OPENED, Alert, AlertBook, Transition
from .messages import message
from .offline import OfflineTimer
from .plan import plan_for
from .rules import Rules
from .sections import EvaluatorSettings


def detector_types() -> tuple[str, ...]:
    """Every alert type: the registered detectors' and the evaluator's own `offline`."""
    return (*(spec.name for spec in registry.ordered()), "offline")


def _position(source) -> tuple[int, int]:
    return (source.partition, source.offset) if source is not None else (-1, -1)


class AlertEvaluator:
    """Alert state of the sensors this instance owns: open alerts, detector history, offline timers."""

    def __init__(self, settings: EvaluatorSettings):
        s = settings
        self.book = AlertBook(s.clear_readings, s.clear_seconds, s.flap.count, s.flap.window_s)
        # The registered detectors, placed in the series' array by the registry (one layout for this evaluator).
        built = registry.build()
        self.specs = [spec for spec, _ in built]
        self.detectors = tuple(detector for _, detector in built)
        self._types = tuple(detector.type for detector in self.detectors)
        self.rules = Rules(s.thresholds, s.detection, self.specs)
        self.offline_severity = s.detection.offline_severity
        # Offline-tracked sensors -> wall clock of their last evaluated reading, with deadlines in a heap.
        self.offline_timer = OfflineTimer(lambda sensor_id: self.rules.offline_after(sensor_id))
        self.sensor_info: dict[str, tuple[str, str | None]] = {}  # sensor -> (type, location), for registration
        # (sensor, metric) -> the wall clock of its last reading; once a detector with history (rate, outlier,
        # stuck) judges it, an array with that clock at [SEEN] and the detectors' history (detectors.py). The
        # float is the batch's one `now` object: a series with a threshold only costs its key and entry.
        self.series: dict[tuple[str, str], float | array] = {}
        self.idle_s = s.state_idle_s  # like every limit, not reloaded live
        self.released_open = 0  # sensors released with an open alert (still open in the database)

    def reconfigure(self, settings: EvaluatorSettings) -> None:
        """Live reload: new detector settings, hysteresis and flap rule for the next readings (rules swapped whole)."""
        s = settings
        self.rules = Rules(s.thresholds, s.detection, self.specs)
        self.offline_timer.reschedule()  # offline limits may have changed
        self.offline_severity = s.detection.offline_severity
        self.book.reconfigure(s.clear_readings, s.clear_seconds, s.flap.count, s.flap.window_s)

    # -- readings -----------------------------------------------------------------------------------
    def evaluate(self, readings: Sequence[Reading], now: float) -> list[Transition]:
        """Judge each reading once; returns the transitions to store, in reading order.

        Each reading goes through its series' plan (plan.py: every detector in one call), which answers None
        in the healthy case. Detectors never read the alert book, so what the book must hear (a verdict with a
        severity, or any verdict once the series has an open alert) is collected as (reading, detector) events
        and applied afterwards in reading order: the same calls, in the same order, as telling the book as each
        reading is judged."""
        open_series = self.book.series_open
        offline_open = self.book.open_of_type("offline") > 0  # else no reading can resolve one: not asked per reading
        events: list[tuple] = []
        alerted: set = set()  # series that had a verdict with a severity in this batch: every verdict counts now
        info, seen = self.sensor_info, self.offline_timer.seen
        for_metric, series, plan_of = self.rules.for_metric, self.series, self._plan
        last = None  # (sensor, type, location) just registered: a message's readings share them
        for i, r in enumerate(readings):
            sensor_id, metric = r.sensor_id, r.metric
            if last is None or last[0] is not sensor_id or last[1] is not r.sensor_type or last[2] is not r.location:
                last = (sensor_id, r.sensor_type, r.location)
                if offline_tracked(r.sensor_type):
                    seen(sensor_id, now)
                info[sensor_id] = (r.sensor_type, r.location)
            if offline_open and (sensor_id, None) in open_series:  # offline: this reading resolves it, before judging
                events.append((i, -1, None))
            mr = for_metric(sensor_id, metric)
            key = (sensor_id, metric)
            s = series.get(key)
            if s is None:  # metric names repeat across sensors: one string for all their keys
                key = (sensor_id, sys.intern(metric))
            if type(s) is array:
                s[SEEN] = now
            elif not mr.history:
                series[key], s = now, None  # no detector here needs a history
            else:
                s = series[key] = new_series(now)
            alerting = key in open_series or (alerted and key in alerted)
            verdicts = (mr.plan or plan_of(mr))(key, r.value, r.ts, s, alerting)
            if verdicts is not None:
                for d, signal in enumerate(verdicts):
                    if signal is not None and (alerting or signal.severity is not None):
                        events.append((i, d, signal))
                        alerting = True  # a severity opens an alert (or the series had one): every verdict counts
                if alerting:
                    alerted.add(key)
        if not events:
            return []
        return self._apply(events, readings)

    def _plan(self, mr) -> Callable:
        """The one call judging a reading under these settings (plan.py), built on first use."""
        mr.plan = plan_for(self.detectors, mr.rules)
        return mr.plan

    def _apply(self, events: list[tuple], readings: Sequence[Reading]) -> list[Transition]:
        """The collected verdicts to the alert book, in reading order and per reading in detector order."""
        book, types, out = self.book, self._types, []
        for i, d, signal in events:
            r = readings[i]
            if d < 0:
                t = book.resolve((r.sensor_id, None, "offline"), r.ts)
            else:
                t = book.observe(r.sensor_id, r.metric, types[d], signal, r.ts, r.value)
            if t is not None:
                self._add(out, t, r.sensor_type, r.location)
        return out

    def gone(self, marks: Sequence[SensorOffline], readings: Sequence[Reading], now: float) -> list[Transition]:
        """Sensors that said they are gone (a Sparkplug death): offline now, without waiting for their limit,
        unless a reading of theirs came after the mark in the same batch (a rebirth: they are back), or offline
        alerts are off for them (offline_after_s 0)."""
        out: list[Transition] = []
        later = {r.sensor_id: _position(r.source) for r in readings if r.source is not None}
        for mark in marks:
            sensor_id = mark.sensor_id
            if sensor_id in later and later[sensor_id] > _position(mark.source) or self.rules.offline_after(sensor_id) <= 0:
                continue
            self.offline_timer.forget((sensor_id,))
            signal = Signal(self.offline_severity, bound=0.0, detail=f"said it is offline ({mark.reason})")
            info = self.sensor_info.get(sensor_id, ("sensor", None))
            self._add(out, self.book.observe(sensor_id, None, "offline", signal, now), *info)
        return out

    def tick(self, now: float) -> list[Transition]:
        """Timed verdicts: sensors silent past their offline limit, alerts clear for `clear_seconds`."""
        out: list[Transition] = []
        for sensor_id, silent_s in self.offline_timer.due(now):  # O(due), not O(sensors)
            signal = offline(silent_s, self.rules.offline_after(sensor_id), self.offline_severity)
            info = self.sensor_info.get(sensor_id, ("sensor", None))
            self._add(out, self.book.observe(sensor_id, None, "offline", signal, now), *info)
        for t in self.book.due(now):
            self._add(out, t)
        return out

    @staticmethod
    def _add(out: list, t: Transition | None, sensor_type: str | None = None, location: str | None = None) -> None:
        """Queue a transition with its message and the sensor's type and location (to register a new sensor)."""
        if t is None:
            return
        t.context = {"type": sensor_type, "location": location} if sensor_type is not None else {}
        t.message = message(t)
        if t.event in (OPENED, ESCALATED, FLAPPING):
            t.alert.message = t.message
        out.append(t)

    # -- state coming and going -----------------------------------------------------------------------
    def load(self, open_alerts: Iterable[Alert], known_sensors: Iterable[tuple[str, str | None]], now: float) -> int:
        """Open alerts and known sensors from the database (start, a newly owned partition). Known sensors count
        as seen now, so silent ones go offline after the limit, if their type is offline-tracked at all."""
        alerts = list(open_alerts)
        self.book.load(a for a in alerts if a.key not in self.book.open)
        timer = self.offline_timer
        for sensor_id, sensor_type in known_sensors:
            # A sensor already offline stays out of the timer until a reading resolves its alert.
            if offline_tracked(sensor_type) and sensor_id not in timer and (sensor_id, None, "offline") not in self.book.open:
                timer.seen(sensor_id, now)
        return len(alerts)

    @property
    def last_seen(self) -> dict[str, float]:
        """Offline-tracked sensors -> when their last reading was evaluated (those the offline timer watches)."""
        return self.offline_timer.last_seen

    def sensors(self) -> set[str]:
        """Every sensor this evaluator holds state for."""
        return set(self.last_seen) | set(self.sensor_info) | {k[0] for k in self.book.open}

    def evict_idle(self, now: float) -> int:
        """Release the state of series without a reading since `now - limits.state_idle_s` that have no open
        alert: detector history, cached rules, flap history; and of sensors left without a series or an open
        alert, their type and location. Returns how many series were released."""
        cutoff = now - self.idle_s
        gone_away = {k[0] for k, a in self.book.open.items() if k[2] == "offline" and a.opened_at < cutoff}
        if gone_away:  # offline for state_idle_s: its open alerts wait in the database for its return
            self.forget(gone_away)
            self.released_open += len(gone_away)
        self.offline_timer.evict_idle(cutoff)
        open_series = {(k[0], k[1]) for k in self.book.open}
        gone = {k for k, s in self.series.items() if seen_at(s) < cutoff and k not in open_series}
        if not gone:
            return 0
        for key in gone:
            del self.series[key]
        if len(gone) > len(self.series):  # a dict keeps its table when emptied: copied, it frees the memory
            self.series = dict(self.series)
        for detector in self.detectors:
            detector.forget_series(gone)
        self.rules.forget_series(gone)
        self.book.forget_closed(lambda key: (key[0], key[1]) in gone)
        active = {k[0] for k in self.series} | {k[0] for k in self.book.open}
        quiet = {k[0] for k in gone} - active - set(self.last_seen)
        for s in quiet:
            self.sensor_info.pop(s, None)
        if len(quiet) > len(self.sensor_info):
            self.sensor_info = dict(self.sensor_info)
        self.book.forget_closed(lambda key: key[1] is None and key[0] in quiet)
        return len(gone)

    def forget(self, sensors: set[str]) -> None:
        """Drop everything about these sensors: open alerts (still open in the database), detector history,
        offline timers. Their next owner (or this instance, should they come back) rebuilds it."""
        if not sensors:
            return
        self.book.forget_sensors(sensors)
        for detector in self.detectors:
            detector.forget(sensors)
        self.offline_timer.forget(sensors)
        for s in sensors:
            self.sensor_info.pop(s, None)
        for key in [k for k in self.series if k[0] in sensors]:
            del self.series[key]

    def forget_resolved_elsewhere(self, still_open_ids: set[int]) -> list[Alert]:
        """Alerts an operator resolved in the database: no longer ours to resolve."""
        return self.book.forget(still_open_ids)

    def open_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(detector_types(), 0)
        counts.update(self.book.open_by_type())
        return counts

