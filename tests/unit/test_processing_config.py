"""Config of windows, detection, alerts and reload: shipped defaults, and errors that name the key."""
from pathlib import Path

import pytest

from pipeline import config as c

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_defaults_cover_environment_and_system_metrics():
    cfg = c.load(ROOT / "config.yaml", env={}).config
    assert cfg.aggregation.periods == ("1m", "5m", "1h") and cfg.aggregation.grace_s == 10
    system = {"cpu_percent", "mem_percent", "disk_percent", "swap_percent", "load1"}
    assert set(cfg.thresholds) >= {"temperature", "humidity", "pressure"} | system
    assert set(cfg.detection.metrics) >= {"temperature", "humidity", "pressure"} | system
    t = cfg.detection.metrics["temperature"]
    assert t.rate.warning and t.outlier.min_samples and t.stuck.count
    assert cfg.detection.offline_after_s == 300 and cfg.alerts.clear_readings == 3
    assert (cfg.redis.streams.aggregations, cfg.redis.streams.alerts) == ("aggregations", "alerts")


@pytest.mark.parametrize("tree, expected", [
    ({"aggregation": {"periods": ["10x"]}}, "aggregation.periods[0]: Expected `str` matching regex"),
    ({"aggregation": {"periods": ["1m", "1m"]}}, "aggregation.periods: a period is listed twice"),
    ({"aggregation": {"periods": []}}, "aggregation.periods: expected at least one period"),
    ({"aggregation": {"grace_s": 60, "max_lateness_s": 30}}, "aggregation.max_lateness_s: must not be below aggregation.grace_s"),
    ({"aggregation": {"grace": 5}}, "aggregation.grace: unknown key"),
    ({"thresholds": {"temperature": {"deadband": -1}}}, "thresholds.temperature.deadband: Expected `float` >= 0.0"),
    ({"detection": {"metrics": {"humidity": {"rate": {"warning": "fast"}}}}},
     "detection.metrics.humidity.rate.warning: Expected `float | null`, got `str`"),
    ({"detection": {"metrics": {"humidity": {"stuck": {"severity": "meh"}}}}},
     "detection.metrics.humidity.stuck.severity: Invalid enum value 'meh'"),
    ({"detection": {"metrics": {"humidity": {"outlier": {"alpha": 2}}}}}, "detection.metrics.humidity.outlier.alpha: Expected `float` <= 1.0"),
    ({"detection": {"metrics": {"humidity": {"rate": {"warning": 5, "critical": 1}}}}},
     "detection.metrics.humidity.rate: the warning limit must not exceed the critical limit"),
    ({"detection": {"metrics": {"humidity": {"threshold": {}}}}}, "detection.metrics.humidity.threshold: unknown key"),
    ({"detection": {"sensors": {"oven-1": {"offline_after_s": "soon"}}}}, "detection.sensors.oven-1.offline_after_s: Expected"),
    ({"detection": {"sensors": {"oven-1": {"metrics": {"temperature": {"threshold": {"warning": {"max": "hot"}}}}}}}},
     "detection.sensors.oven-1.metrics.temperature.threshold.warning.max: Expected `float | null`, got `str`"),
    ({"detection": {"sensors": {"oven-1": {"metrics": {"temperature": {"threshold": {"warning": {"min": 9, "max": 1}}}}}}}},
     "detection.sensors.oven-1.metrics.temperature.threshold.warning: min must be below max"),
    ({"alerts": {"clear_readings": -1}}, "alerts.clear_readings: Expected `int` >= 0"),
    ({"alerts": {"webhook": {"url": "ftp://example.com"}}}, "alerts.webhook.url: Expected `str` matching regex"),
    ({"reload": {"watch_interval_s": -1}}, "reload.watch_interval_s: Expected `float` >= 0.0"),
])
def test_invalid_processing_config_names_the_key(tree, expected):
    with pytest.raises(c.ConfigError) as err:
        c.parse(tree, {})
    assert str(err.value).startswith(expected)


def test_environment_overrides_reach_the_new_sections():
    cfg = c.parse({}, {"PIPELINE__AGGREGATION__PERIODS": "[10s, 1m]", "PIPELINE__ALERTS__WEBHOOK__URL": "http://h/x",
                       "PIPELINE__DETECTION__OFFLINE_AFTER_S": "60"})
    assert cfg.aggregation.periods == ("10s", "1m") and cfg.alerts.webhook.url == "http://h/x"
    assert cfg.detection.offline_after_s == 60
