"""What the alert operator reads of the config: its own sections, built once by the wiring (pipeline/app/build.py).

The evaluator and the runner never see the whole Config. On a live reload the wiring builds new sections from the
new config and hands them to `AlertRunner.update_config`; only the live ones (runtime/reload.py LIVE_KEYS) are used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ...config import DetectionConfig, PostgresConfig, RedisConfig, RetryConfig, ThresholdRule
from ...config.alerting import FlapConfig, MaintenanceWindow


@dataclass(frozen=True)
class EvaluatorSettings:
    """What the evaluator judges by: thresholds, detection, alerts.clear_*, alerts.flap (live); limits.state_idle_s."""

    thresholds: Mapping[str, ThresholdRule]
    detection: DetectionConfig
    clear_readings: int
    clear_seconds: float
    flap: FlapConfig
    state_idle_s: float  # like every limit, read at construction only (not reloaded live)


@dataclass(frozen=True)
class AlertSections:
    """Everything the alert operator reads of the config; `evaluator` and `maintenance` are reloaded live."""

    evaluator: EvaluatorSettings
    maintenance: tuple[MaintenanceWindow, ...]  # alerts.maintenance
    retry: RetryConfig
    tick_s: float  # processing.interval_s
    postgres: PostgresConfig
    redis: RedisConfig
    partitions: int  # kafka.partitions: which sensors are ours before their first reading
