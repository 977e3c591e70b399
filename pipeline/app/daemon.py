"""The daemon's lifecycle: components come from the builders (build.py); it starts their threads through the
supervisor and shuts down in order.

Shutdown order: stop ingest (MQTT takes no more; Kafka confirms what it took, MQTT acks go out),
stop consuming, let the sinks drain and flush, commit offsets, close connections.
"""
from __future__ import annotations

import logging
import threading
import time

import psycopg

from .. import __version__
from ..agents.system import SystemAgent
from ..config import Settings
from ..clients.kafka import ensure_topics
from ..clients.postgres import conninfo
from ..ingest.dispatch import ConsumeDispatch
from ..ingest.mqtt_bridge import MqttBridge, client_id_suffix
from ..logship import MQTTHandler
from ..ingest.broker_stats import BrokerStats
from ..observability.metrics import Metrics
from ..operators.alerts.runner import AlertRunner
from ..operators.limits.refresh import RegistryLookup, RegistryRefresh
from ..stages.limits import load_known
from ..operators.logcounts.runner import LogCounter
from ..operators.windows.tracker import parse_period
from ..observability.rates import counter_totals
from ..observability.status import LiveStatus
from ..storage.partitions import PartitionJob
from ..records import Reading
from ..storage.retention import RetentionJob
from ..sinks.deadletter import DeadLetterWriter, dead_letter_topics
from ..runtime.batch import Batch
from ..runtime.busy import BusyWatch
from ..runtime.chain import StageChain
from ..runtime.deadline import Deadline, call_bounded
from ..runtime.reload import ConfigHolder
from ..runtime.retry import retry_call
from ..runtime.supervisor import Supervisor
from ..stages.formats import router as format_router
from ..stages.mapping import with_source_topics
from ..stages.mapping_stats import MappingStats
from .build import (alert_sections, build_alerts, build_feeds, build_limits, build_sinks, build_stages, build_windows,
                    run_operator)
from .format_operators import FormatOperators
from .instance_lock import AlreadyConsumed, SingleInstanceLock
from .own_sources import build_broker_stats, build_log_handler, build_system_agent

log = logging.getLogger(__name__)
# Seconds of the shutdown budget (at most a quarter of it) kept for the commit and closing connections.
CLOSE_RESERVE_S = 3.0


def lookback_period(periods, lookback_s: float) -> str:
    """The period whose rows tell the metrics active recently (limits.metrics_lookback_s): the longest one that
    fits the lookback (a `1d` row exists only once its day is over: it never began within a 2-hour lookback),
    else the shortest."""
    sizes = {p: parse_period(p) for p in periods}
    fitting = [p for p in periods if sizes[p] <= lookback_s]
    return max(fitting, key=sizes.get) if fitting else min(periods, key=sizes.get)


class Pipeline:
    """One pipeline instance: wires the components, starts their threads through the supervisor;
    `start()`, then `wait()` or `stop()`. The dashboard sees it only through `status`."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None):
        self.settings = settings
        cfg = settings.config
        # The banner is the first line an instance logs (before any client is built).
        log.info("event=starting version=%s instance=%s config=%s plugins=%s", __version__, cfg.instance_id, settings.path,
                 ",".join(cfg.plugins) or "none")
        self.metrics = metrics or Metrics()
        self.supervisor = Supervisor(self.metrics.thread_alive)
        self.started_at = time.time()
        self._stopped = threading.Event()
        self.dead_letters = DeadLetterWriter(cfg.kafka, cfg.instance_id, self.metrics)
        # The window operator listens to the PostgreSQL sink's inserts: windows are computed from its rows and
        # marked pending in its transactions (where each part runs: pipeline/operators/windows/aggregator.py).
        self.windows = build_windows(settings, self.metrics)
        # The log counter turns stored application logs into readings; the logs sink tells it what was stored.
        self.sinks = build_sinks(settings, self.metrics, self.dead_letters,
                                 insert_listeners=[self.windows] if self.windows is not None else (),
                                 on_logs_written=lambda *args: self.log_counter.mark(*args))
        by_name = {s.name: s for s in self.sinks}
        self.log_counter = LogCounter(cfg.postgres, settings.secrets.postgres_password, cfg.logs, cfg.retry, self.metrics,
                                      self.inject, correct=by_name["postgres"].correct)
        dead_letter_sink = by_name.get("dead_letter")
        self.config = ConfigHolder(settings, self.metrics)
        self.alerts: AlertRunner | None = build_alerts(settings, self.metrics, self.dead_letters, self.supervisor.spawn)
        if self.alerts is not None:
            # Run like a sink (same queue, holds and commit bookkeeping), but it only computes.
            self.sinks.append(run_operator(self.alerts, settings, self.metrics))
            alerts = self.alerts  # a live reload hands it its new sections, never the whole Config
            self.config.subscribe(lambda new: alerts.update_config(alert_sections(new)))
        # Stateful operators of the selected formats (Sparkplug B's host): stages right after decoding.
        self.format_ops = FormatOperators(settings, self.metrics)
        # Each best-effort sink reads the raw topic through a feed of its own and keeps its own committed position.
        self.feeds = build_feeds(settings, self.sinks, self.metrics, operators=self.format_ops.stages)
        self.limits = build_limits(settings)
        self.mapping_stats = MappingStats(self.metrics)  # the main chain's mappings count here (dashboard, metrics)
        self.chain = StageChain(build_stages(settings, limits=self.limits, mapping_stats=self.mapping_stats,
                                             operators=self.format_ops.stages), self.metrics)
        self._registry_lookup: RegistryLookup | None = None  # the limits stage's, on the consumer thread
        self.source: ConsumeDispatch | None = None
        self.bridge: MqttBridge | None = None
        self.dashboard = None  # pipeline.dashboard.server.Dashboard when dashboard.enabled
        self.system_agent: SystemAgent | None = None
        self.log_handler: MQTTHandler | None = None
        self._sources_stop = threading.Event()
        self.instance_lock: SingleInstanceLock | None = None
        self.broker_stats: BrokerStats | None = None
        # Handles of the threads stop() joins itself, in its fixed order.
        self._consumer_thread = self._log_counter_thread = self._agent_thread = None
        self._sink_threads: list = []
        self._feed_threads: list = []
        self.status = LiveStatus(cfg.instance_id, self.started_at, self.supervisor, self.sinks, self.config,
                                 cfg.mqtt.host, cfg.mqtt.port, dead_letter_sink, feeds=self.feeds)
        self.status.attach_mappings(self.mapping_stats)

    def start(self) -> None:
        cfg = self.settings.config
        if cfg.dashboard.enabled:
            # First, so a taken port fails the start at once and /ready shows the start-up as it happens.
            from ..dashboard.server import Dashboard  # Flask only when the dashboard is wanted

            self.dashboard = Dashboard(self.status, self.settings, self.metrics, self.supervisor.spawn,
                                       silences=self.alerts.silences if self.alerts is not None else None)
            self.dashboard.start()
        # Services may still be starting (boot, a restarted host): keep trying for retry.max_elapsed_s.
        self._at_start("kafka_create_topics",
                       lambda: ensure_topics(cfg.kafka, [cfg.kafka.topics.raw, *dead_letter_topics(cfg.kafka).values()]))
        for sink in self.sinks:
            self._at_start(f"{sink.name}_connect", sink.start)
            self._sink_threads.append(self.supervisor.spawn(f"sink-{sink.name}", sink.run))
        self._at_start("log_counter_connect", self.log_counter.start)
        self._log_counter_thread = self.supervisor.spawn("log-counter", self.log_counter.run)
        partition_job = PartitionJob(self.settings, self.metrics)  # before consuming: readings of now and ahead have partitions
        self._at_start("partitions_ahead", partition_job.run_once)
        self.supervisor.spawn("partitions", lambda: partition_job.run(self._stopped))
        if cfg.kafka.assignment == "single":
            # Before consuming: a second single-instance daemon on the same group would consume the same partitions.
            self.instance_lock = SingleInstanceLock(cfg.postgres, self.settings.secrets.postgres_password,
                                                    cfg.kafka.consumer_group, cfg.kafka.topics.raw, cfg.instance_id)
            self._at_start("single_instance_lock", self.instance_lock.acquire)
            self.supervisor.spawn("single-instance-lock", lambda: self.instance_lock.keep(self._stopped))
        self._at_start("limits_load", self._load_known_sensors)
        self._start_registry_refresh()
        # Until the consumer group assigns partitions this instance owns none: state loaded at start is dropped
        # and reloaded per assigned partition, so a second instance never touches the first one's sensors.
        for sink in self.sinks:
            sink.partitions_assigned(set())
        self._at_start("format_operators_start", self.format_ops.start)
        # The best-effort sinks are fed by their own feeds; in group mode those follow this consumer's partitions.
        self.source = ConsumeDispatch(cfg.kafka, cfg.instance_id, self.chain, [s for s in self.sinks if s.durable],
                                      self.metrics, cfg.processing.batch_size, cfg.processing.shutdown_timeout_s / 2,
                                      followers=(*self.format_ops.stages,
                                                 *(() if cfg.kafka.assignment == "single" else self.feeds)))
        self.status.attach_source(self.source)
        self._consumer_thread = self.supervisor.spawn("kafka-consumer", self.source.run)
        for feed in self.feeds:  # after their sinks started
            self._feed_threads.append(self.supervisor.spawn(f"feed-{feed.sink.name}", feed.run))
        # Records a partition skipped for good become readings (an alert by thresholds.kafka_offset_gap).
        self.supervisor.spawn("offset-gaps", lambda: self._report_gaps(self.source, cfg.kafka.gap_report_interval_s))
        self.bridge = MqttBridge(with_source_topics(cfg), cfg.kafka, self.settings.secrets.mqtt_password, self.metrics, self.supervisor,
                                 cfg.validation.max_payload_bytes, client_id_suffix(cfg.mqtt, cfg.instance_id),
                                 partition_key=format_router(cfg).key)
        self.status.attach_bridge(self.bridge)
        self.bridge.start()
        if self.config.watchable:
            self.supervisor.spawn("config-reload", lambda: self.config.run(self._stopped, cfg.reload.watch_interval_s))
        self._start_own_sources()
        self.broker_stats = build_broker_stats(self.settings, self.metrics, self.inject)
        if self.broker_stats is not None:  # the broker's own drop counters, shown and alerted on
            self.status.attach_broker_stats(self.broker_stats)
            self.supervisor.spawn("broker-stats", lambda: self.broker_stats.run(self._sources_stop))
        if cfg.retention.enabled:
            job = RetentionJob(self.settings, self.metrics)
            self.supervisor.spawn("retention", lambda: job.run(self._stopped))
        log.info("event=started threads=%s", ",".join(self.supervisor.names()))

    def _start_own_sources(self) -> None:
        """This host's system metrics and the daemon's own warnings, through MQTT like any other source."""
        self.system_agent = build_system_agent(self.settings, self.metrics)
        if self.system_agent is not None:
            self.system_agent.publisher.start(self.supervisor.spawn)
            self._agent_thread = self.supervisor.spawn("agent-system", lambda: self.system_agent.run(self._sources_stop))
        self.log_handler = build_log_handler(self.settings, self.metrics, self.supervisor.spawn)
        if self.log_handler is not None:
            logging.getLogger().addHandler(self.log_handler)

    def _report_gaps(self, source: ConsumeDispatch, interval_s: float) -> None:
        while not self._sources_stop.wait(interval_s):
            readings = source.gap_readings()
            if readings:
                self.inject(readings)

    def inject(self, readings: list[Reading], durable: bool = False) -> Batch | None:
        """Readings made inside the daemon (log counts) go to every durable sink, like a consumed batch without
        offsets (a best-effort sink reads only the raw topic, through its feed).
        `durable`: already in measurements, so a PostgreSQL sink that cannot skip duplicates leaves them out.
        Returns the batch (its `done` is set once every sink holds it), None when stopping."""
        sinks = [s for s in self.sinks if s.durable and (not durable or s.accepts_stored())]
        batch = Batch(readings, [], {}, len(sinks))
        for sink in sinks:
            if not sink.put(batch, self._stopped):
                return None
        return batch

    def _load_known_sensors(self) -> None:
        """Before consuming: the sensors (and recent metrics) already stored count against limits.*."""
        cfg = self.settings.config
        limits = self.limits
        period = lookback_period(cfg.aggregation.periods, cfg.limits.metrics_lookback_s) if cfg.aggregation.enabled \
            else None
        with psycopg.connect(**conninfo(cfg.postgres, self.settings.secrets.postgres_password)) as conn:
            load_known(conn, limits.registry, period, cfg.limits.metrics_lookback_s, limits=limits)
        log.info("event=limits_loaded sensors=%d max_sensors=%d registration=%s", len(limits.registry),
                 cfg.limits.max_sensors, cfg.limits.registration)

    def _start_registry_refresh(self) -> None:
        """Sensors added, relabelled or removed while running reach the limit filter within registry_refresh_s."""
        cfg = self.settings.config
        limits = self.limits
        info = conninfo(cfg.postgres, self.settings.secrets.postgres_password)
        refresh = RegistryRefresh(lambda: psycopg.connect(**info), limits, cfg.limits.registry_refresh_s)
        # Ids past the table read (a table larger than max_sensors) are looked up before being refused.
        self._registry_lookup = limits.lookup = RegistryLookup(lambda: psycopg.connect(**info, autocommit=True))
        self.supervisor.spawn("sensor-registry", lambda: refresh.run(self._stopped))

    def _at_start(self, operation: str, fn) -> None:
        cfg = self.settings.config
        retry_call(fn, operation=operation, policy=cfg.retry,
                   is_transient=lambda err: not isinstance(err, (TypeError, ValueError, AlreadyConsumed)),
                   max_elapsed_s=cfg.retry.max_elapsed_s,
                   on_retry=lambda *_: self.metrics.retries.labels(operation).inc())

    def healthy(self) -> bool:
        return self.supervisor.healthy()

    def wait(self, stop: threading.Event) -> int:
        """Block until `stop` is set or a thread fails; then shut down. Returns the exit code."""
        watch, next_watch = BusyWatch(), 0.0
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_watch:  # a sink busy for minutes says so (runtime/busy.py)
                next_watch = now + 1.0
                for line in watch.check(((s.name, s.busy.state) for s in self.sinks), now):
                    log.warning(line)
            if self.supervisor.wait_failure(0.1):  # also how soon a stop request starts the shutdown clock
                where, err = self.supervisor.first_failure()  # type: ignore[misc]
                log.error("event=thread_failed thread=%s error=%r", where, str(err)[:500])
                self.stop()
                return 1
            dead = self.supervisor.dead()
            if dead:
                log.error("event=thread_died threads=%s", ",".join(dead))
                self.stop()
                return 1
        return self.stop()

    def stop(self) -> int:
        """Fixed order, every step bounded by one deadline (processing.shutdown_timeout_s from now).
        Returns 0 if every batch was committed and every step finished in time, else 1: what was not
        committed is redelivered by Kafka at the next start."""
        if self._stopped.is_set():
            return 0
        self._stopped.set()
        budget = self.settings.config.processing.shutdown_timeout_s
        deadline = Deadline(budget)
        # Kept back for committing and leaving the group: a sink waiting for its service must not use up
        # the time to commit what the other sinks hold.
        reserve = min(CLOSE_RESERVE_S, budget / 4)
        late: list[str] = []  # steps abandoned at their timeout

        def bounded(step: str, fn, timeout: float) -> None:
            if not call_bounded(step, fn, timeout):
                late.append(step)

        if self.dashboard is not None:
            # Before anything closes: the dashboard reads the sinks, the source and the bridge.
            bounded("dashboard", lambda: self.dashboard.stop(1.0), min(4.0, deadline.left(reserve)))
        log.info("event=stopping step=own_sources")
        self._sources_stop.set()
        if self.log_handler is not None:
            logging.getLogger().removeHandler(self.log_handler)
            self.log_handler.close()  # bounded: what it still holds reaches MQTT before the bridge stops
        self.supervisor.join([self._agent_thread], deadline, reserve)
        if self.system_agent is not None:
            self.system_agent.publisher.close(min(2.0, deadline.left(reserve)))
        log.info("event=stopping step=ingest")
        if self.bridge is not None:
            # Bounded from outside too: paho's loop_stop() waits for its network thread, which can be stuck
            # handing a message to a full producer queue while Kafka is away.
            flush_s = deadline.left(reserve) / 3
            bounded("mqtt_bridge", lambda: self.bridge.stop(flush_s), min(flush_s + 2.5, deadline.left(reserve)))
        log.info("event=stopping step=consumer")
        if self.source is not None:
            self.source.stop()
        self.format_ops.stop()  # their retries end: the consumer thread is let go
        for feed in self.feeds:  # before their sinks finish: no batch is handed over after the sink's last flush
            feed.stop()
        self.supervisor.join([self._consumer_thread, *self._feed_threads], deadline, reserve)
        if self._registry_lookup is not None and not (self._consumer_thread and self._consumer_thread.is_alive()):
            self._registry_lookup.close()  # its one user, the consumer thread, has ended
        # Counts are not handed on while sinks drain; a window left uncounted is counted after the next start.
        self.log_counter.stop()
        self.supervisor.join([self._log_counter_thread], deadline, reserve)
        log.info("event=stopping step=sinks")
        for sink in self.sinks:
            sink.finish()
        self.supervisor.join(self._sink_threads, deadline, reserve)
        # Time is up for the sinks: stop the retries of those still waiting for their service. Batches they
        # do not hold stay uncommitted.
        for sink in self.sinks:
            sink.stop()
        self.supervisor.join(self._sink_threads, deadline, reserve * 3 / 4)
        for feed in self.feeds:  # commits what its sink wrote: the sink's checkpoint for the next start
            bounded(f"{feed.sink.name}_feed_close", lambda f=feed: f.close(1.0), max(0.1, min(3.0, deadline.left())))
        drained = True
        if self.source is not None:
            drained = self.source.drain_and_close(deadline.left())
        for sink in self.sinks:
            bounded(f"{sink.name}_close", sink.close, max(0.1, deadline.left()))
        bounded("format_operators_close", lambda: self.format_ops.close(1.0), max(0.1, min(2.0, deadline.left())))
        bounded("log_counter_close", self.log_counter.close, max(0.1, deadline.left()))
        if self.instance_lock is not None:  # last: another daemon may take over only after our commits
            bounded("single_instance_lock_release", self.instance_lock.release, max(0.1, deadline.left()))
        skipped = counter_totals(self.metrics.readings_deduplicated, "reason")
        log.info("event=stopped drained=%s late_steps=%s took_s=%.1f uptime_s=%.0f consumed=%d deduplicated=%s", drained,
                 ",".join(late) or "none", budget - (deadline.at - time.monotonic()), time.time() - self.started_at,
                 sum(counter_totals(self.metrics.kafka_consumed).values()),
                 ",".join(f"{reason}:{skipped.get(reason, 0):.0f}" for reason in ("redelivery", "conflict")))
        return 0 if drained and not late else 1
