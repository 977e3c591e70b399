import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import config as c

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize("tree, expected", [
    ({"mqtt": {"port": 0}}, "mqtt.port: Expected `int` >= 1"),
    ({"mqtt": {"port": "many"}}, "mqtt.port: Expected `int`, got `str`"),
    ({"mqtt": {"prot": 1883}}, "mqtt.prot: unknown key"),
    ({"surprise": 1}, "surprise: unknown key"),
    ({"kafka": {"topics": {"raw": ""}}}, "kafka.topics.raw: Expected `str` of length >= 1"),
    ({"processing": {"batch_size": -5}}, "processing.batch_size: Expected `int` >= 1"),
    ({"mqtt": {"protocol": "4"}}, "mqtt.protocol: Invalid enum value '4'"),
    ({"thresholds": {"temperature": {"warning": {"max": "hot"}}}}, "thresholds.temperature.warning.max: Expected `float | null`, got `str`"),
    ({"thresholds": {"temperature": {"warning": {"min": 50, "max": 10}}}}, "thresholds.temperature.warning: min must be below max"),
    ({"units": {"temperature": {"convert": []}}}, "units.temperature: Object missing required field `canonical`"),
    ({"postgres": {"pool_min": 5, "pool_max": 2}}, "postgres.pool_min: must not exceed postgres.pool_max"),
    ({"kafka": {"heartbeat_interval_ms": 20000, "session_timeout_ms": 10000}}, "kafka.heartbeat_interval_ms: must be below"),
    ([1, 2], "(top level): expected a mapping"),
])
def test_invalid_config_names_the_key(tree, expected):
    with pytest.raises(c.ConfigError) as err:
        c.parse(tree, {})
    assert str(err.value).startswith(expected)


def test_environment_overrides_file_and_is_typed():
    cfg = c.parse({"mqtt": {"port": 1883}}, {"PIPELINE__MQTT__PORT": "1884", "PIPELINE__MQTT__TOPICS": "[a/#, b/#]",
                                             "PIPELINE__POSTGRES__DEDUPLICATE": "false"})
    assert cfg.mqtt.port == 1884
    assert cfg.mqtt.topics == ("a/#", "b/#")
    assert cfg.postgres.deduplicate is False


def test_bad_environment_value_names_the_key():
    with pytest.raises(c.ConfigError, match=r"^kafka.partitions: Expected `int`"):
        c.parse({}, {"PIPELINE__KAFKA__PARTITIONS": "lots"})


def test_config_is_frozen():
    cfg = c.parse({}, {})
    with pytest.raises(AttributeError):
        cfg.mqtt.port = 1  # type: ignore[misc]


def test_secrets_come_from_environment_and_never_print(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("postgres: {user: app}\n")
    s = c.load(f, env={"POSTGRES_PASSWORD": "hunter2", "MQTT_PASSWORD": "s3cret"})
    assert s.secrets.postgres_password.reveal() == "hunter2"
    assert "hunter2" not in repr(s) and "s3cret" not in repr(s) and "hunter2" not in str(s.secrets)


def test_password_in_yaml_is_refused():
    with pytest.raises(c.ConfigError, match=r"^postgres.password: unknown key"):
        c.parse({"postgres": {"password": "x"}}, {})


def test_env_example_lists_every_variable():
    text = (ROOT / ".env.example").read_text()
    missing = [n for n in c.env_names() + list(c.SECRET_ENV.values()) if n not in text]
    assert missing == []


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


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(c.ConfigError, match="cannot read config file"):
        c.load(tmp_path / "absent.yaml", env={})
    broken = tmp_path / "broken.yaml"
    broken.write_text("mqtt: [unclosed\n")
    with pytest.raises(c.ConfigError, match="invalid YAML"):
        c.load(broken, env={})
