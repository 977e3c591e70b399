"""Builders: each component made from its own section of the frozen config (the daemon only starts and stops them)."""
from __future__ import annotations

import os
from typing import Sequence

from prometheus_client import CollectorRegistry

from ..config import Config, Settings
from ..config.checks import allowed_metrics
from ..ingest.sink_feed import SinkFeed
from ..observability.metrics import Metrics
from ..runtime.chain import StageChain
from ..runtime.format_operator import SkipOperatorRecords
from ..operators.alerts.runner import AlertRunner
from ..operators.alerts.sections import AlertSections, EvaluatorSettings
from ..operators.alerts.silences import Silences
from ..operators.base import OperatorRunner
from ..operators.sparkplug import SPARKPLUG  # noqa: F401 - registers the sparkplug formats (processing.formats)
from ..operators.windows.aggregator import WindowAggregator
from ..sinks import builtin, registry
from ..sinks.deadletter import DeadLetterWriter
from ..sinks.notify import build_notifier
from ..stages.decode import Decode
from ..stages.lateness import LateFilter
from ..stages.limits import LimitFilter
from ..stages.formats import router as format_router
from ..stages.mapping_stats import MappingStats
from ..stages.logs import ValidateLog
from ..stages.transform import NormalizeUnits
from ..stages.validate import Validate

assert builtin.DEFAULT_USE  # importing it registers today's sinks


def build_pure_stages(settings: Settings, mapping_stats: MappingStats | None = None) -> list:
    """The stages that judge each message on its own (decode, validate, units, logs): the main chain's first part and
    a best-effort sink's feed's whole chain. `mapping_stats`: where the mappings count (the main chain's only)."""
    cfg = settings.config
    v = cfg.validation
    return [
        Decode(v.max_payload_bytes, v.max_readings_per_message, max_json_depth=v.max_json_depth,
               formats=format_router(cfg, mapping_stats)),
        Validate(v.max_future_skew_s, v.max_age_s, v.default_type, v.default_location,
                 allowed_metrics=allowed_metrics(cfg)),
        NormalizeUnits(cfg.units),
        ValidateLog(cfg.logs.max_message_bytes, v.max_future_skew_s, v.max_age_s,
                    max_extra_bytes=cfg.logs.max_extra_bytes, max_extra_depth=cfg.logs.max_extra_depth),
    ]


def build_stages(settings: Settings, limits: LimitFilter | None = None,
                 mapping_stats: MappingStats | None = None, operators: Sequence = ()) -> list:
    """The processing stages in order, each given only its own section of the config (`limits`: the daemon's;
    `operators`: the selected formats' operators, run right after decoding: pipeline/app/format_operators.py)."""
    cfg = settings.config
    stages = build_pure_stages(settings, mapping_stats)
    stages[1:1] = operators
    if cfg.aggregation.enabled:  # readings too late for their window are dead-lettered before they are stored
        stages.append(LateFilter(cfg.aggregation.grace_s, cfg.aggregation.max_lateness_s))
    # Last: only a reading that would be stored makes its sensor and metric known.
    stages.append(limits if limits is not None else build_limits(settings))
    return stages


def build_limits(settings: Settings) -> LimitFilter:
    """The limit filter (limits.*): sensors and metrics past the limits are refused."""
    lim = settings.config.limits
    return LimitFilter(lim.max_sensors, lim.max_metrics_per_sensor, lim.registration, lim.state_idle_s,
                       lookups_per_s=lim.registry_lookups_per_s)


def build_windows(settings: Settings, metrics: Metrics) -> WindowAggregator | None:
    """The window operator (aggregation.*), or None when off."""
    cfg = settings.config
    if not cfg.aggregation.enabled:
        return None
    return WindowAggregator(cfg.aggregation, cfg.redis, settings.secrets.redis_password, metrics,
                            state_idle_s=cfg.limits.state_idle_s)


def build_sinks(settings: Settings, metrics: Metrics, dead_letters: DeadLetterWriter, *, insert_listeners=(),
                on_logs_written=None) -> list:
    """The sinks `sinks.use` names, in order (pipeline/sinks/registry.py)."""
    ctx = registry.SinkContext(settings.config, settings.secrets, metrics, dead_letters,
                               insert_listeners=tuple(insert_listeners), on_logs_written=on_logs_written)
    return registry.build(ctx, settings.config.sinks.use)


def alert_sections(cfg: Config) -> AlertSections:
    """The alert operator's sections of the config (at start and on each live reload)."""
    a = cfg.alerts
    evaluator = EvaluatorSettings(cfg.thresholds, cfg.detection, a.clear_readings, a.clear_seconds, a.flap,
                                  cfg.limits.state_idle_s)
    return AlertSections(evaluator, a.maintenance, cfg.retry, cfg.processing.interval_s, cfg.postgres, cfg.redis,
                         cfg.kafka.partitions)


def build_feeds(settings: Settings, sinks, metrics: Metrics, operators: Sequence = ()) -> list[SinkFeed]:
    """A feed of its own for each best-effort sink (pipeline/ingest/sink_feed.py).

    Its chain is the pure stages only. Lateness and the limits are left out: their verdicts depend on the moment
    the main path read a message (the watermark, the sensor registry then), so a feed catching up minutes later
    would judge differently; and the limits' registry is the main consumer's, not shared across threads. The chain
    counts into a registry of its own, so the pipeline's refusal counters do not count a message twice."""
    cfg = settings.config
    skip = [SkipOperatorRecords(tuple(op.accepts for op in operators))] if operators else []

    def stages() -> list:  # after decoding, the records only a format operator reads are dropped
        out = build_pure_stages(settings)
        out[1:1] = skip
        return out

    return [SinkFeed(cfg.kafka, cfg.instance_id, sink, StageChain(stages(), Metrics(CollectorRegistry())),
                     metrics, cfg.processing.batch_size) for sink in sinks if not sink.durable]


def build_alerts(settings: Settings, metrics: Metrics, dead_letters: DeadLetterWriter, spawn) -> AlertRunner | None:
    """The alert operator (alerts.*) with its notifier, or None when off."""
    cfg = settings.config
    if not cfg.alerts.enabled:
        return None
    # Acknowledged, snoozed and maintenance alerts are not notified: one Silences (loaded at start, told of
    # API changes, refreshed every tick) is handed to the notifier, the alert operator and the dashboard.
    silences = Silences(cfg.alerts.maintenance)
    notifier = build_notifier(cfg.alerts, os.environ, settings.secrets.alert_webhook_secret, cfg.retry, metrics,
                              dead_letters=dead_letters, spawn=spawn, silenced=silences.silenced)
    return AlertRunner(alert_sections(cfg), settings.secrets.postgres_password, settings.secrets.redis_password,
                       metrics, spawn=spawn, notifier=notifier, silences=silences)


def run_operator(operator, settings: Settings, metrics: Metrics) -> OperatorRunner:
    """An operator's runner (its thread, queue and commit hold), batching per `sinks.<operator name>`."""
    cfg = settings.config
    return OperatorRunner(operator, settings=getattr(cfg.sinks, operator.name), retry=cfg.retry, metrics=metrics,
                          queue_max_batches=cfg.processing.queue_max_batches)
