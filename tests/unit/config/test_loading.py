"""From file and environment to Settings: the environment overlay and its types, unreadable files, the
--check-config command, and .env.example listing every variable."""
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import config as c

ROOT = Path(__file__).resolve().parents[3]


def test_environment_overrides_file_and_is_typed():
    cfg = c.parse({"mqtt": {"port": 1883}}, {"PIPELINE__MQTT__PORT": "1884", "PIPELINE__MQTT__TOPICS": "[a/#, b/#]",
                                             "PIPELINE__POSTGRES__DEDUPLICATE": "false"})
    assert cfg.mqtt.port == 1884
    assert cfg.mqtt.topics == ("a/#", "b/#")
    assert cfg.postgres.deduplicate is False


def test_environment_overrides_reach_the_new_sections():
    cfg = c.parse({}, {"PIPELINE__AGGREGATION__PERIODS": "[10s, 1m]", "PIPELINE__ALERTS__WEBHOOK__URL": "http://h/x",
                       "PIPELINE__DETECTION__OFFLINE_AFTER_S": "60"})
    assert cfg.aggregation.periods == ("10s", "1m") and cfg.alerts.webhook.url == "http://h/x"
    assert cfg.detection.offline_after_s == 60


def test_make_run_switch_enables_the_agent_from_the_environment():
    cfg = c.load(ROOT / "config.yaml", env={"PIPELINE__AGENTS__SYSTEM__ENABLED": "true"}).config
    assert cfg.agents.system.enabled is True


def test_bad_environment_value_names_the_key():
    with pytest.raises(c.ConfigError, match=r"^kafka.partitions: Expected `int`"):
        c.parse({}, {"PIPELINE__KAFKA__PARTITIONS": "lots"})


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(c.ConfigError, match="cannot read config file"):
        c.load(tmp_path / "absent.yaml", env={})
    broken = tmp_path / "broken.yaml"
    broken.write_text("mqtt: [unclosed\n")
    with pytest.raises(c.ConfigError, match="invalid YAML"):
        c.load(broken, env={})


def test_check_config_cli_exit_codes(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mqtt:\n  port: 99999\n")
    proc = subprocess.run([sys.executable, str(ROOT / "realtime_pipeline.py"), "--config", str(bad), "--check-config"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "config error: mqtt.port: Expected `int` <= 65535"
    good = subprocess.run([sys.executable, str(ROOT / "realtime_pipeline.py"), "--config", str(ROOT / "config.yaml"),
                           "--check-config"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert good.returncode == 0 and "config ok" in good.stdout


def test_env_example_lists_every_variable():
    text = (ROOT / ".env.example").read_text()
    missing = [n for n in c.env_names() + list(c.SECRET_ENV.values()) if n not in text]
    assert missing == []
