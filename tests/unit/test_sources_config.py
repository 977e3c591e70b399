"""Config of the data sources: defaults, and refusals that name the key."""
from pathlib import Path

import pytest

from pipeline import config as c

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_defaults_for_the_sources():
    cfg = c.load(ROOT / "config.yaml", env={}).config
    assert "logs/#" in cfg.mqtt.topics and cfg.redis.streams.logs == "logs"
    assert cfg.agents.system.enabled is False and cfg.logs.ship_own is False
    assert (cfg.logs.topic_root, cfg.logs.count_window_s, cfg.logs.max_message_bytes) == ("logs", 60, 8192)
    assert {"cpu_percent", "mem_percent", "disk_percent", "swap_percent", "log_error"} <= set(cfg.thresholds)
    assert cfg.thresholds["log_error"].warning.max is not None
    assert c.parse({}, {}).mqtt.topics == cfg.mqtt.topics  # the schema default matches the file


def test_make_run_switch_enables_the_agent_from_the_environment():
    cfg = c.load(ROOT / "config.yaml", env={"PIPELINE__AGENTS__SYSTEM__ENABLED": "true"}).config
    assert cfg.agents.system.enabled is True


@pytest.mark.parametrize("tree, expected", [
    ({"logs": {"ship_app": "bad app"}}, "logs.ship_app: Expected `str` matching regex"),
    ({"logs": {"ship_app": "a" * 47}}, "logs.ship_app: Expected `str` of length <= 46"),
    ({"logs": {"topic_root": "a/b"}}, "logs.topic_root: Expected `str` matching regex"),
    ({"logs": {"ship_level": "DEBUG"}}, "logs.ship_level: Invalid enum value 'DEBUG'"),
    ({"logs": {"count_window_s": 0}}, "logs.count_window_s: Expected `int` >= 1"),
    ({"agents": {"system": {"interval_s": 0}}}, "agents.system.interval_s: Expected `float` >= 0.1"),
    ({"agents": {"system": {"topic_root": "logs"}}}, "agents.system.topic_root: must differ from logs.topic_root"),
    ({"agents": {"system": {"enabled": True}}, "mqtt": {"topics": ["sensors/#"]}},
     "agents.system.topic_root: 'system' is not covered by mqtt.topics"),
    ({"logs": {"ship_own": True}, "mqtt": {"topics": ["sensors/#", "system/#"]}},
     "logs.ship_own: logs.topic_root 'logs' is not covered by mqtt.topics"),
])
def test_invalid_source_config_names_the_key(tree, expected):
    with pytest.raises(c.ConfigError) as err:
        c.parse(tree, {})
    assert str(err.value).startswith(expected)


def test_a_wildcard_subscription_covers_every_root():
    cfg = c.parse({"mqtt": {"topics": ["#"]}, "agents": {"system": {"enabled": True}}, "logs": {"ship_own": True}}, {})
    assert cfg.agents.system.enabled and cfg.logs.ship_own
