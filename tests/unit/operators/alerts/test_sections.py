"""The alert evaluator and runner are built from their own sections of the config, never from the whole Config."""
from prometheus_client import CollectorRegistry

from pipeline.app.build import alert_sections
from pipeline.config import (
    Bounds, DetectionConfig, PostgresConfig, RedisConfig, RetryConfig, Secret, ThresholdRule, parse,
)
from pipeline.config.alerting import FlapConfig
from pipeline.observability.metrics import Metrics
from pipeline.operators.alerts.evaluator import AlertEvaluator
from pipeline.operators.alerts.runner import AlertRunner
from pipeline.operators.alerts.sections import AlertSections, EvaluatorSettings
from pipeline.records import Reading

T0 = 1_760_000_000.0


def settings(max_temp: float) -> EvaluatorSettings:
    return EvaluatorSettings({"temperature": ThresholdRule(warning=Bounds(max=max_temp))}, DetectionConfig(),
                             clear_readings=1, clear_seconds=0.0, flap=FlapConfig(count=0), state_idle_s=3600.0)


def hot(value: float, ts: float) -> Reading:
    return Reading("s1", "sensor", "hall", "temperature", value, ts, ts)


def test_evaluator_is_built_and_reconfigured_from_its_settings_alone():
    ev = AlertEvaluator(settings(30.0))
    assert [t.event for t in ev.evaluate([hot(35.0, T0)], T0)] == ["opened"]
    ev.reconfigure(settings(40.0))  # the bound moved above the reading: it is inside again
    assert [t.event for t in ev.evaluate([hot(35.0, T0 + 1)], T0 + 1)] == ["resolved"]
    assert ev.idle_s == 3600.0


def test_runner_is_built_and_reloaded_from_its_sections_alone():
    sections = AlertSections(settings(30.0), (), RetryConfig(), 7.0, PostgresConfig(), RedisConfig(), 5)
    runner = AlertRunner(sections, Secret(""), Secret(""), Metrics(CollectorRegistry()))
    assert (runner.tick_interval_s, runner.partitions, runner.idle_sweep.idle_s) == (7.0, 5, 3600.0)
    assert [t.event for t in runner.evaluator.evaluate([hot(35.0, T0)], T0)] == ["opened"]
    runner.update_config(AlertSections(settings(40.0), (), RetryConfig(), 7.0, PostgresConfig(), RedisConfig(), 5))
    assert [t.event for t in runner.evaluator.evaluate([hot(35.0, T0 + 1)], T0 + 1)] == ["resolved"]


def test_alert_sections_takes_exactly_the_keys_the_operator_reads():
    cfg = parse({"thresholds": {"temperature": {"warning": {"max": 30}}},
                 "alerts": {"clear_readings": 4, "clear_seconds": 9, "flap": {"count": 2, "window_s": 60}},
                 "limits": {"state_idle_s": 1234}, "processing": {"interval_s": 3}, "kafka": {"partitions": 6}})
    s = alert_sections(cfg)
    assert s.evaluator == EvaluatorSettings(cfg.thresholds, cfg.detection, 4, 9.0, cfg.alerts.flap, 1234.0)
    assert (s.maintenance, s.retry, s.tick_s, s.postgres, s.redis, s.partitions) == (
        cfg.alerts.maintenance, cfg.retry, 3.0, cfg.postgres, cfg.redis, 6)
