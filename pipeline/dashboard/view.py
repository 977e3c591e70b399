"""What the dashboard knows about the running pipeline: liveness, readiness, throughput, lag, errors.

The Flask app only talks to a view (see `View`); the daemon hands it a `PipelineView`, tests may hand it
a fake. The view reads the running pipeline only through its status interface (observability/status.py). One thread samples the metrics once a second (rates, latency quantiles, queue depths, write
ages); another does the slower things every few seconds (consumer lag, open alerts, dependency probes).
"""
from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import Callable, Protocol

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from prometheus_client import generate_latest

from .. import __version__
from ..config import DashboardConfig, KafkaConfig
from ..clients.kafka import client_conf as kafka_client_conf
from ..clients.kafka import group_lag
from ..observability.rates import LiveStats, counter_totals, histogram_counts
from ..observability.metrics import Metrics
from ..observability.recent import RecentErrors
from ..observability.status import PipelineStatus
from .store import SEVERITY_ORDER, Store, Unavailable
from .workflow import AlertWorkflow

log = logging.getLogger(__name__)
SLOW_EVERY_S = 5.0  # consumer lag, open alerts, probes: broker and database round trips


class View(Protocol):
    """The read (and resolve) interface the Flask app uses; PipelineView is the real one."""

    def health(self) -> tuple[bool, dict]: ...
    def ready(self) -> tuple[bool, dict]: ...
    def metrics_text(self) -> bytes: ...
    def pipeline(self, history_s: int, errors: int) -> dict: ...
    def sensors(self, q: str | None, limit: int, offset: int, spark_minutes: int) -> dict: ...
    def sensor(self, sensor_id: str) -> dict | None: ...
    def trend(self, sensor_id: str, metric: str, period: str, start: float, end: float) -> dict: ...
    def series(self, sensor_id: str, metric: str, start: float, end: float, points: int) -> dict: ...
    def alerts(self, status: str, severity: str | None, sensor_id: str | None, limit: int,
               state: str | None = None) -> list[dict]: ...
    def resolve_alert(self, alert_id: int) -> tuple[str, dict | None]: ...
    def acknowledge_alert(self, alert_id: int, who: str, note: str) -> tuple[str, dict | None]: ...
    def snooze_alert(self, alert_id: int, duration_s: float, who: str, note: str) -> tuple[str, dict | None]: ...
    def snooze(self, sensor_id: str | None, metric: str | None, type_: str | None, duration_s: float, who: str,
               note: str) -> dict: ...
    def unsnooze(self, snooze_id: int, who: str, note: str) -> tuple[str, dict | None]: ...
    def snoozes(self, limit: int) -> list[dict]: ...
    def mappings(self) -> dict: ...


class Probe:
    """Runs a check at most once per `ttl` seconds and remembers (ok, detail); one caller at a time."""

    def __init__(self, check: Callable[[], str], ttl: float, clock=time.monotonic):
        self.check = check
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._at: float | None = None
        self._result: tuple[bool, str] = (False, "not checked yet")

    def get(self) -> tuple[bool, str]:
        with self._lock:
            if self._at is None or self.clock() - self._at >= self.ttl:
                try:
                    self._result = (True, self.check() or "ok")
                except Exception as err:  # noqa: BLE001 - any failure of a probe is the answer, not a crash
                    self._result = (False, f"{type(err).__name__}: {str(err).strip()[:300]}")
                self._at = self.clock()
            return self._result


class PipelineView:
    """The real view over a pipeline's status interface, its metrics and the dashboard's own Store."""

    def __init__(self, status: PipelineStatus, metrics: Metrics, kafka: KafkaConfig, store: Store, cfg: DashboardConfig,
                 recent: RecentErrors, clock=time.time, silences=None):
        self.status = status
        self.store = store
        self.cfg = cfg
        self.recent = recent
        self.metrics = metrics
        self.clock = clock
        self.stats = LiveStats(window_s=5.0, history_s=cfg.history_s)
        self.lag: dict[int, int] = {}
        self.lag_error: str | None = None
        self.open_alerts: dict[str, int] = {}
        # Acknowledge, snooze; the daemon's Silences (None with alerts off) is told of each change at once.
        self.workflow = AlertWorkflow(store, silences)
        self._raw_topic = kafka.topics.raw
        self._group = kafka.consumer_group
        self._admin_conf = kafka_client_conf(kafka, f"{status.instance_id}-dashboard")
        self._admin_client: AdminClient | None = None
        self._admin_lock = threading.Lock()
        self.probes = {
            "kafka": Probe(self._check_kafka, cfg.probe_cache_s),
            "postgres": Probe(lambda: store.ping_postgres() or "SELECT 1 ok", cfg.probe_cache_s),
            "redis": Probe(lambda: store.ping_redis() or "PING ok", cfg.probe_cache_s),
        }

    # -- probes ---------------------------------------------------------------------------------
    @property
    def _admin(self) -> AdminClient:
        # Created on first use: building a view (in tests, say) does not open broker connections.
        with self._admin_lock:
            if self._admin_client is None:
                self._admin_client = AdminClient(self._admin_conf)
            return self._admin_client

    def _check_kafka(self) -> str:
        if not self.status.consumer().started:
            # Still starting: a metadata request naming the topic could make a broker auto-create it with
            # its defaults before the pipeline creates it with ours, so only ask whether the broker answers.
            md = self._admin.list_topics(timeout=2.0)
            return f"{len(md.brokers)} broker(s) reachable"
        md = self._admin.list_topics(topic=self._raw_topic, timeout=2.0)
        topic = md.topics.get(self._raw_topic)
        if topic is None or topic.error is not None:
            raise RuntimeError(f"topic {self._raw_topic}: {topic.error if topic else 'missing'}")
        return f"{len(md.brokers)} broker(s), topic {self._raw_topic} has {len(topic.partitions)} partitions"

    def _consumer_lag(self) -> None:
        """Group lag per partition of the raw topic, as `kafka-consumer-groups` shows it: the high watermark
        minus the committed offset. Asked through our own AdminClient: the consumer handle belongs to its thread."""
        topic, group, timeout = self._raw_topic, self._group, 2.0
        if not self.status.consumer().started:
            return  # the topics may not exist yet (see _check_kafka)
        try:
            lag, _committed = group_lag(self._admin, topic, group, timeout)
            self.lag_error = None
        except (KafkaException, KeyError, concurrent.futures.TimeoutError) as err:
            self.lag_error = f"{type(err).__name__}: {str(err)[:300]}"
            return
        gauge = self.metrics.consumer_lag
        for gone in set(self.lag) - set(lag):
            gauge.remove(str(gone))
        for partition, value in lag.items():
            gauge.labels(str(partition)).set(value)
        self.lag = lag

    def _refresh_open_alerts(self) -> None:
        try:
            counts = self.store.open_alert_counts()
        except Unavailable:
            return
        # Severity is free text in the table: anything but the three known levels is counted as "other".
        folded = {s: 0 for s in (*SEVERITY_ORDER, "other")}
        for sev, n in counts.items():
            folded[sev if sev in folded else "other"] += n
        for sev, n in folded.items():
            self.metrics.alerts_open_db.labels(sev).set(n)
        self.open_alerts = folded

    # -- the monitor thread ---------------------------------------------------------------------
    def sample(self) -> dict:
        """Read the counters and histograms once; returns the new live point."""
        m = self.metrics
        counters = {"mqtt_received": sum(counter_totals(m.mqtt_received).values()),
                    "kafka_produced": counter_totals(m.kafka_produced, "topic_kind").get("raw", 0.0),
                    "kafka_consumed": sum(counter_totals(m.kafka_consumed).values()),
                    "invalid": sum(counter_totals(m.invalid).values()),
                    "dead_lettered": sum(counter_totals(m.dead_lettered).values()),
                    "alerts_opened": counter_totals(m.alert_transitions, "event").get("opened", 0.0)}
        counters.update({f"stage:{k}": v for k, v in counter_totals(m.stage_out, "stage").items()})
        counters.update({f"written:{k}": v for k, v in counter_totals(m.sink_written, "sink").items()})
        counters.update({f"retries:{k}": v for k, v in counter_totals(m.retries, "operation").items()})
        hists = {f"e2e:{k}": h for k, h in histogram_counts(m.e2e_latency, "sink").items()}
        hists.update({f"device:{k}": h for k, h in histogram_counts(m.device_latency, "sink").items()})
        self._refresh_fast_gauges()
        return self.stats.add(self.clock(), counters, hists)

    def _refresh_fast_gauges(self) -> None:
        now = self.clock()
        for sink in self.status.sinks():
            self.metrics.sink_last_success_age.labels(sink.name).set(now - (sink.last_success or self.status.started_at))
            self.metrics.queue_depth.labels(sink.name).set(sink.queue_depth)
            self.metrics.sink_blocked.labels(sink.name)  # 0 until the sink blocks: a series to alert on from the start

    def run_monitor(self, stop: threading.Event, interval: float = 1.0) -> None:
        """The sampling loop: rates, latency quantiles, write ages and queue depths every `interval`."""
        while not stop.is_set():
            started = time.monotonic()
            self.sample()
            stop.wait(max(0.05, interval - (time.monotonic() - started)))

    def run_probes(self, stop: threading.Event, interval: float = SLOW_EVERY_S) -> None:
        """The slow loop, apart so a broker or database that takes seconds to answer never delays sampling:
        consumer lag, the open-alert count and the dependency probes (for the dependency_up gauges)."""
        while not stop.is_set():
            started = time.monotonic()
            self._consumer_lag()
            self._refresh_open_alerts()
            self.ready()
            stop.wait(max(0.05, interval - (time.monotonic() - started)))

    # -- endpoints --------------------------------------------------------------------------------
    def health(self) -> tuple[bool, dict]:
        threads = self.status.threads()
        failures = [{"thread": where, "error": error[:300]} for where, error in self.status.failures()]
        ok = all(threads.values()) and not failures
        return ok, {"status": "ok" if ok else "failing", "uptime_s": round(self.clock() - self.status.started_at, 1),
                    "threads": threads, "failures": failures}

    def _sink_checks(self, now: float) -> dict:
        rates = (self.stats.latest() or {}).get("rates", {})
        out = {}
        for sink in self.status.sinks():
            age = now - (sink.last_success or self.status.started_at)
            depth = sink.queue_depth
            retrying = rates.get(f"retries:{sink.name}_write", 0.0) > 0
            # An idle sink writes nothing and that is fine: only work waiting without progress is a problem.
            stale = (depth > 0 or retrying) and age > self.cfg.stale_write_after_s
            detail = (f"no successful write for {age:.0f}s with {depth} batch(es) waiting"
                      + (" and writes being retried" if retrying else "")) if stale else "ok"
            blocked_s = None if sink.blocked_since is None else round(max(0.0, now - sink.blocked_since), 1)
            if sink.blocked is not None:  # holding a batch until the store takes writes again: not ready now
                detail = f"blocked for {blocked_s:.0f}s, holding its batch: {sink.blocked}"
            ok = not stale and sink.blocked is None
            entry = {"ok": ok, "detail": detail, "last_success_age_s": round(age, 1),
                     "last_success": sink.last_success, "queue_depth": depth, "retrying": retrying,
                     "blocked": sink.blocked, "blocked_s": blocked_s}
            if sink.best_effort:  # catches up from its own checkpoint: its lag is shown, it never fails /ready
                entry.update(ok=True, best_effort=True, lag=sink.lag,
                             detail=f"best-effort, {sink.feed}" + ("" if ok else f"; {detail}"))
            out[sink.name] = entry
        return out

    def ready(self) -> tuple[bool, dict]:
        now = self.clock()
        checks: dict[str, dict] = {}
        live, health = self.health()
        dead = [n for n, alive in health["threads"].items() if not alive]
        checks["threads"] = {"ok": live, "detail": "all alive" if live else
                             f"dead: {', '.join(dead) or '-'}; failures: {len(health['failures'])}"}
        mqtt = self.status.mqtt()
        checks["mqtt"] = {"ok": mqtt.connected, "detail": f"{'connected to' if mqtt.connected else 'not connected to'} "
                                                          f"{mqtt.host}:{mqtt.port}"}
        for name, probe in self.probes.items():
            ok, detail = probe.get()
            checks[name] = {"ok": ok, "detail": detail}
        for name in ("mqtt", *self.probes):
            self.metrics.dependency_up.labels(name).set(1 if checks[name]["ok"] else 0)
        # No partitions is not a failure by itself (with more instances than partitions some stay idle); a
        # consumer that waits in vain while messages pile up is (the source's watchdog decides).
        consumer = self.status.consumer()
        checks["consumer"] = {"ok": consumer.ok, "detail": consumer.detail}
        sinks = self._sink_checks(now)
        checks["sinks"] = {"ok": all(s["ok"] for s in sinks.values()), "sinks": sinks,
                           "detail": "; ".join(f"{n}: {s['detail']}" for n, s in sinks.items() if not s["ok"]) or "ok"}
        total = sum(self.lag.values())
        limit = self.cfg.ready_max_consumer_lag
        lag_ok = not limit or total <= limit
        checks["consumer_lag"] = {"ok": lag_ok, "total": total, "partitions": {str(k): v for k, v in self.lag.items()},
                                  "detail": (f"{total} messages behind" + ("" if lag_ok else f" (limit {limit})"))
                                  + (f"; last lag query failed: {self.lag_error}" if self.lag_error else "")}
        reload = self.status.config_reload()
        reload_error, restart = reload.last_error, list(reload.restart_required)
        # A refused reload leaves the previous, valid configuration running: reported, but still ready.
        checks["config"] = {"ok": True, "last_reload_error": reload_error, "restart_required": restart,
                            "detail": f"last reload refused: {reload_error}" if reload_error else
                            (f"changed, needs a restart: {', '.join(restart)}" if restart else "ok")}
        failing = [name for name, c in checks.items() if not c["ok"]]
        self.metrics.ready.set(0 if failing else 1)  # pipeline_ready: the same verdict, for alerting rules
        return not failing, {"ready": not failing, "failing": failing,
                             "problems": {n: checks[n]["detail"] for n in failing}, "checks": checks}

    def metrics_text(self) -> bytes:
        self._refresh_fast_gauges()
        return generate_latest(self.metrics.registry)

    def pipeline(self, history_s: int = 0, errors: int = 20) -> dict:
        point = self.stats.latest() or {"t": self.clock(), "rates": {}, "latency": {}}
        m = self.metrics
        status = self.status
        sinks = status.sinks()
        return {
            "instance_id": status.instance_id, "version": __version__,
            "uptime_s": round(self.clock() - status.started_at, 1), "started_at": status.started_at,
            "time": point["t"], "throughput": point["rates"], "latency": point["latency"],
            "totals": {"mqtt_received": sum(counter_totals(m.mqtt_received).values()),
                       "kafka_consumed": sum(counter_totals(m.kafka_consumed).values()),
                       **{f"written:{k}": v for k, v in counter_totals(m.sink_written, "sink").items()}},
            "queues": {s.name: s.queue_depth for s in sinks},
            "in_flight_batches": status.consumer().in_flight,
            "consumer_lag": {"total": sum(self.lag.values()), "partitions": {str(k): v for k, v in self.lag.items()},
                             "error": self.lag_error},
            "deduplicated": counter_totals(m.readings_deduplicated, "reason"),
            "dead_letters": counter_totals(m.dead_lettered, "reason"),
            "dead_letters_by_kind": counter_totals(m.dead_lettered, "kind"),
            "invalid": counter_totals(m.invalid, "reason"),
            "alerts_open": self.open_alerts,
            # The MQTT broker's own drop counters (pipeline/ingest/broker_stats.py); None when not watched.
            "broker": status.broker_drops(),
            # Holes in a partition's offsets (pipeline/ingest/continuity.py): counts by event, and those given up.
            "offset_gaps": {"events": counter_totals(m.offset_gaps, "event"), "held": list(status.consumer().gaps)},
            "recent_errors": self.recent.items(errors),
            "history": self.stats.history(history_s),
        }

    def mappings(self) -> dict:
        """The configured mappings' counts and last refused samples (the Mappings panel)."""
        status = getattr(self.status, "mappings", None)  # a status of an older shape has none
        return {"mappings": status() if status is not None else []}

    # -- data (delegated to the store) ------------------------------------------------------------
    def sensors(self, q: str | None = None, limit: int = 200, offset: int = 0, spark_minutes: int = 0) -> dict:
        result = self.store.sensors(q, limit, offset)
        if spark_minutes:
            ids = [s["sensor_id"] for s in result["sensors"]]
            result["sparklines"] = self.store.sparklines(ids, spark_minutes, self.clock())
        return result

    def sensor(self, sensor_id: str) -> dict | None:
        return self.store.sensor(sensor_id)

    def trend(self, sensor_id: str, metric: str, period: str, start: float, end: float) -> dict:
        return self.store.trend(sensor_id, metric, period, start, end)

    def series(self, sensor_id: str, metric: str, start: float, end: float, points: int) -> dict:
        return self.store.series(sensor_id, metric, start, end, points, self.clock())

    def alerts(self, status: str = "open", severity: str | None = None, sensor_id: str | None = None,
               limit: int = 100, state: str | None = None) -> list[dict]:
        return self.store.alerts(status, severity, sensor_id, limit, state)

    # -- the operator's workflow (pipeline/dashboard/workflow.py) ----------------------------------
    @property
    def silences(self):
        return self.workflow.silences

    @silences.setter
    def silences(self, value) -> None:
        self.workflow.silences = value

    def acknowledge_alert(self, alert_id: int, who: str, note: str) -> tuple[str, dict | None]:
        return self.workflow.acknowledge(alert_id, who, note)

    def snooze_alert(self, alert_id: int, duration_s: float, who: str, note: str) -> tuple[str, dict | None]:
        return self.workflow.snooze_alert(alert_id, duration_s, who, note)

    def snooze(self, sensor_id: str | None, metric: str | None, type_: str | None, duration_s: float, who: str,
               note: str) -> dict:
        return self.workflow.snooze(sensor_id, metric, type_, duration_s, who, note)

    def unsnooze(self, snooze_id: int, who: str, note: str) -> tuple[str, dict | None]:
        return self.workflow.unsnooze(snooze_id, who, note)

    def snoozes(self, limit: int = 200) -> list[dict]:
        return self.workflow.snoozes(limit)

    def resolve_alert(self, alert_id: int) -> tuple[str, dict | None]:
        outcome, alert = self.store.resolve_alert(alert_id)
        if outcome == "resolved" and alert is not None:
            self.metrics.alert_transitions.labels(alert["type"], "resolved", alert["severity"]).inc()
            log.info("event=alert_resolved_by_hand id=%d type=%s severity=%s", alert_id, alert["type"], alert["severity"])
            self._refresh_open_alerts()
        return outcome, alert
