"""The alert operator: the evaluator on every batch and on a timer, with its lock and partition ownership.

It is an operator (pipeline/operators/base.py): the daemon runs it in an OperatorRunner, which gives it the
thread ("sink-alerts"), the bounded queue, retries, holds and metrics, so a batch's Kafka offsets are
committed only after its readings were evaluated and the resulting transitions stored. Each reading is
judged once, when its batch arrives (`take`); `store` only stores transitions, so a retried store never
judges a reading twice. Its tick
(processing.interval_s) runs the offline detector, time-based resolution and a check for alerts that an
operator resolved in the database. Judging is the evaluator's (evaluator.py); storing, announcing and
notifying the store's (pipeline/operators/alerts/store.py).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Sequence

from ...config import Secret
from ...observability.metrics import Metrics
from ...runtime.batch import Batch
from ...runtime.idle import IdleSweep
from ...runtime import memory
from ...runtime.ownership import Ownership, sensor_partition
from ...runtime.retry import Stopped
from ...runtime.supervisor import Spawn, plain_thread
from .store import AlertNotifier, AlertStore
from ..base import Operator
from . import silence_sync
from .evaluator import AlertEvaluator
from .lifecycle import Transition
from .sections import AlertSections
from .silences import Silences

log = logging.getLogger(__name__)


class AlertRunner(Operator):
    """Runs the evaluator on every batch and on a timer; stores what it decides through the alert store."""

    name = "alerts"

    def __init__(self, sections: AlertSections, pg_password: Secret, redis_password: Secret, metrics: Metrics, *,
                 clock=time.time, spawn: Spawn = plain_thread, notifier: AlertNotifier | None = None,
                 silences: Silences | None = None):
        super().__init__(sections.retry, metrics)
        self.clock = clock
        self.tick_interval_s = sections.tick_s
        self.evaluator = AlertEvaluator(sections.evaluator)
        # Acknowledged, snoozed, in maintenance: one object, owned by the daemon and handed to the notifier, the
        # dashboard's API (which tells it its changes) and here; the store flags what it stores with it.
        self.silences = silences if silences is not None else Silences(sections.maintenance)
        self.silences.locate_with(self._location)
        self.store = AlertStore(sections.postgres, pg_password, sections.redis, redis_password, self.metrics, spawn,
                                notifier, self.silences)
        # Scale-out: only sensors of partitions this instance owns are evaluated here (docs/operations.md).
        self.partitions = sections.partitions
        self.partition_of: dict[str, int] = {}  # sensor -> the partition its readings arrived on
        self.ownership = Ownership()
        self.lock = threading.RLock()  # rebalance callbacks (consumer thread) against evaluation (this thread)
        self.known_locations: dict[str, str] = {}
        self.idle_sweep = IdleSweep(sections.evaluator.state_idle_s)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self.store.start()
        # The same load as on a partition assignment, for every sensor (nothing is owned or dropped yet).
        n = self._load(lambda _sensor_id: True)
        silence_sync.load(self.store.pool, self.silences)
        self.known_locations = silence_sync.locations(self.store.pool)
        self.store.start_notifications()
        log.info("event=sink_started sink=alerts open_alerts=%d known_sensors=%d notification_channels=%d", n,
                 len(self.evaluator.last_seen), len(self.store.notifier.channels) if self.store.notifier else 0)

    def update_config(self, sections: AlertSections) -> None:
        """Live reload: new detector settings, hysteresis and maintenance windows for the next batch (the other
        sections need a restart and are not read here)."""
        ev = sections.evaluator
        with self.lock:
            self.evaluator.reconfigure(ev)
        self.silences.reconfigure(sections.maintenance)
        log.info("event=alert_rules_reloaded metrics=%d sensor_overrides=%d",
                 len(ev.thresholds) + len(ev.detection.metrics), len(ev.detection.sensors))

    def close(self) -> None:
        self.store.close()

    def _location(self, sensor_id: str) -> str | None:
        """Where a sensor is: from its latest reading, else as registered (read at start)."""
        info = self.evaluator.sensor_info.get(sensor_id)
        return (info[1] if info is not None and info[1] else None) or self.known_locations.get(sensor_id)

    # -- evaluation (once per reading, when its batch arrives) ----------------------------------
    def take(self, batch: Batch) -> Sequence[Transition]:
        """Judge the batch's readings (once, on arrival) and return the alert transitions to store."""
        with self.lock:
            first, misplaced = set(), []
            for r in batch.readings:
                if r.source is not None and r.sensor_id not in self.partition_of:
                    if self._first_reading(r.sensor_id, r.source.partition):
                        misplaced.append(r.sensor_id)
                    first.add(r.sensor_id)
            if misplaced:
                self._load_sensors(misplaced)
            if first and self.evaluator.released_open and self.store.pool is not None:
                self._reload_returning(first)
            now = self.clock()
            out = self.evaluator.evaluate(batch.readings, now)
            if batch.offline:  # sensors that said they are gone: offline now (pipeline/operators/sparkplug)
                out += self.evaluator.gone(batch.offline, batch.readings, now)
            return out

    def _reload_returning(self, sensors: set[str]) -> None:
        """Sensors seen here for the first time since their state went (or since start): their alerts that are
        open in the database come back (an offline alert released while they were away is resolved by this
        batch). Only once something was released with an open alert; one statement per batch."""
        todo = sorted(sensors)  # alerts already held are not loaded twice (evaluator.load)
        try:
            alerts = self.retrying(lambda: self.store.load_open_of(todo), "alerts_reload")
        except Stopped:
            raise
        except Exception as err:  # noqa: BLE001 - judged without them; the alerts stay open in the database
            log.warning("event=alerts_reload_failed sensors=%d error=%r", len(todo), str(err)[:200])
            return
        if alerts:
            self.evaluator.load(alerts, (), self.clock())
            log.info("event=alert_state_reloaded sensors=%d open_alerts=%d", len(todo), len(alerts))

    def tick(self) -> None:
        """Offline sensors, alerts clear for long enough, alerts resolved by an operator."""
        now = self.clock()
        with self.lock:
            out = self.evaluator.tick(now)
            if self.idle_sweep.due(now):
                self._evict_idle(now)
        try:
            if out:
                self.retrying(lambda: self.store.store(out), "alerts_tick")
                self.durable(out)
            if self.store.pool is not None:  # snoozes and acknowledgements made through another instance
                silence_sync.load(self.store.pool, self.silences)
            ids = self.store.open_ids()
            with self.lock:
                for a in self.evaluator.forget_resolved_elsewhere(ids):
                    log.info("event=alert_resolved_elsewhere alert_id=%s sensor_id=%s type=%s", a.id, a.sensor_id, a.type)
                self._gauge_open()
        except Stopped:
            log.warning("event=alerts_tick_unstored transitions=%d", len(out))
        except Exception as err:  # noqa: BLE001 - the next tick tries again; a failing timer must not stop the readings
            if not self.is_transient(err):
                log.exception("event=alerts_tick_failed")
            else:
                log.warning("event=alerts_tick_failed error=%r", str(err)[:200])

    def _evict_idle(self, now: float) -> None:
        """Series silent for limits.state_idle_s: their state goes (a sensor that returns is loaded again)."""
        before = self.evaluator.released_open
        released = self.evaluator.evict_idle(now)
        memory.released(released, "alerts")
        if self.evaluator.released_open > before:
            log.info("event=alert_state_released_offline sensors=%d note=open_in_database",
                     self.evaluator.released_open - before)
        held = self.evaluator.sensors()
        for s in [s for s in self.partition_of if s not in held]:
            del self.partition_of[s]
        if released:
            log.info("event=alert_state_released series=%d sensors_held=%d", released, len(held))

    # -- storing -------------------------------------------------------------------------------
    def write(self, records: Sequence[Transition]) -> None:
        self.store.store(records)

    def durable(self, records: Sequence[Transition]) -> None:
        for t in records:
            self.metrics.alert_transitions.labels(t.alert.type, t.event, t.severity).inc()
            log.info("event=alert_%s alert_id=%s sensor_id=%s metric=%s type=%s severity=%s", t.event, t.alert.id,
                     t.alert.sensor_id, t.alert.metric or "-", t.alert.type, t.severity)
        self._gauge_open()

    def _gauge_open(self) -> None:
        for type_, n in self.evaluator.open_counts().items():
            self.metrics.alerts_open.labels(type_).set(n)

    # -- partition ownership (scale-out) -------------------------------------------------------
    def _partition(self, sensor_id: str) -> int:
        p = self.partition_of.get(sensor_id)
        return p if p is not None else sensor_partition(sensor_id, self.partitions)

    def _drop(self, gone) -> None:
        """Forget every sensor whose partition `gone(partition)` says is no longer ours."""
        dropped = {s for s in self.evaluator.sensors() | set(self.partition_of) if gone(self._partition(s))}
        if not dropped:
            return
        self.evaluator.forget(dropped)
        for s in dropped:
            self.partition_of.pop(s, None)
        self._gauge_open()
        log.info("event=alert_state_handed_off sensors=%d", len(dropped))

    def _load(self, mine) -> int:
        """Open alerts and known sensors for which `mine(sensor_id)` holds, from the database."""
        alerts, sensors = self.store.load_open(mine)
        n = self.evaluator.load(alerts, sensors, self.clock())
        self._gauge_open()
        return n

    def _first_reading(self, sensor_id: str, partition: int) -> bool:
        """A sensor's first reading here; True if the CRC32 guess put it elsewhere (its messages keyed otherwise:
        another partitioner, a Sparkplug edge node, a mapping's device level), so its open alerts were not loaded
        on assignment and must be loaded now."""
        self.partition_of[sensor_id] = partition
        return self.ownership.owned is not None and partition != sensor_partition(sensor_id, self.partitions) \
            and self.store.pool is not None

    def _load_sensors(self, sensor_ids: list[str]) -> None:
        """Open alerts and registrations of these sensors, one indexed statement each for the whole batch (a
        query per sensor reading every open alert and the whole sensors table grew with the square of the fleet)."""
        alerts, sensors = self.store.load_open_for(sensor_ids)
        self.evaluator.load(alerts, sensors, self.clock())
        self._gauge_open()

    def partitions_assigned(self, partitions: set[int]) -> None:
        """Keep only the sensors of our partitions; load open alerts of newly owned ones."""
        with self.lock:
            to_drop, to_load = self.ownership.assign(partitions)
            self._drop((lambda p: p not in partitions) if to_drop is None else (lambda p: p in to_drop))
            if to_load and self.store.pool is not None:
                n = self._load(lambda s: sensor_partition(s, self.partitions) in to_load)
                log.info("event=alert_partitions_loaded partitions=%s open_alerts=%d",
                         ",".join(map(str, sorted(to_load))), n)

    def partitions_revoked(self, partitions: set[int]) -> None:
        """Hand off: the next owner loads these sensors' open alerts from the database."""
        with self.lock:
            gone = self.ownership.revoke(partitions)
            self._drop(lambda p: p in gone)
