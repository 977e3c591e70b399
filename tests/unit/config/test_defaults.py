"""What config.yaml ships and the schema defaults: the values the pipeline runs with when nothing is set."""
from pathlib import Path

import pytest

from pipeline import config as c

ROOT = Path(__file__).resolve().parents[3]


def test_shipped_config_is_valid_and_has_seed_defaults():
    s = c.load(ROOT / "config.yaml", env={})
    cfg = s.config
    assert (cfg.mqtt.host, cfg.mqtt.port) == ("localhost", 1883)
    assert cfg.kafka.bootstrap_servers == "localhost:9092"
    assert (cfg.redis.host, cfg.redis.port) == ("localhost", 6379)
    assert (cfg.postgres.host, cfg.postgres.port, cfg.postgres.database) == ("localhost", 5432, "sensor_data")
    assert cfg.processing.batch_size == 1000 and cfg.processing.interval_s == 5
    assert cfg.dashboard.port == 8080
    assert set(cfg.thresholds) >= {"temperature", "humidity", "pressure"}


def test_shipped_defaults_cover_environment_and_system_metrics():
    cfg = c.load(ROOT / "config.yaml", env={}).config
    assert cfg.aggregation.periods == ("1m", "5m", "1h", "1d") and cfg.aggregation.grace_s == 10
    system = {"cpu_percent", "mem_percent", "disk_percent", "swap_percent", "load1"}
    assert set(cfg.thresholds) >= {"temperature", "humidity", "pressure"} | system
    assert set(cfg.detection.metrics) >= {"temperature", "humidity", "pressure"} | system
    t = cfg.detection.metrics["temperature"]
    assert t.rate.warning and t.outlier.min_samples and t.stuck.count
    assert cfg.detection.offline_after_s == 300 and cfg.alerts.clear_readings == 3
    assert (cfg.redis.streams.aggregations, cfg.redis.streams.alerts) == ("aggregations", "alerts")


def test_shipped_defaults_for_the_sources():
    cfg = c.load(ROOT / "config.yaml", env={}).config
    assert "logs/#" in cfg.mqtt.topics and cfg.redis.streams.logs == "logs"
    assert cfg.agents.system.enabled is False and cfg.logs.ship_own is False
    assert (cfg.logs.topic_root, cfg.logs.count_window_s, cfg.logs.max_message_bytes) == ("logs", 60, 8192)
    assert {"cpu_percent", "mem_percent", "disk_percent", "swap_percent", "log_error"} <= set(cfg.thresholds)
    assert cfg.thresholds["log_error"].warning.max is not None
    assert c.parse({}, {}).mqtt.topics == cfg.mqtt.topics  # the schema default matches the file


def test_config_is_frozen():
    cfg = c.parse({}, {})
    with pytest.raises(AttributeError):
        cfg.mqtt.port = 1  # type: ignore[misc]
