"""Secrets: only from the environment, never printed, masked in the redacted view (secret.py, redact.py)."""
import json

import pytest

from pipeline import config as c


def test_secrets_come_from_environment_and_never_print(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("postgres: {user: app}\n")
    s = c.load(f, env={"POSTGRES_PASSWORD": "hunter2", "MQTT_PASSWORD": "s3cret"})
    assert s.secrets.postgres_password.reveal() == "hunter2"
    assert "hunter2" not in repr(s) and "s3cret" not in repr(s) and "hunter2" not in str(s.secrets)


def test_password_in_yaml_is_refused():
    with pytest.raises(c.ConfigError, match=r"^postgres.password: unknown key"):
        c.parse({"postgres": {"password": "x"}}, {})


def test_kafka_secrets_from_environment_are_masked_in_redacted_output():
    env = {"KAFKA_SASL_PASSWORD": "s3cr3t-sasl", "MQTT_PASSWORD": "s3cr3t-mqtt",
           "PIPELINE__KAFKA__CLIENT": "{security.protocol: SASL_SSL, sasl.mechanism: PLAIN, sasl.username: svc}"}
    settings = c.Settings(config=c.parse({}, env), secrets=c.Secrets.from_env(env), path="x.yaml")
    assert settings.config.kafka.client["sasl.password"] == "s3cr3t-sasl"  # reaches every librdkafka client
    view = c.redacted(settings)
    text = json.dumps(view)
    assert "s3cr3t" not in text
    # Every sasl.* property is masked (sasl.jaas.config and sasl.oauthbearer.config carry secrets inside).
    assert view["config"]["kafka"]["client"] == {"security.protocol": "SASL_SSL", "sasl.mechanism": "***",
                                                 "sasl.username": "***", "sasl.password": "***"}
    assert view["secrets"] == {"MQTT_PASSWORD": "***", "POSTGRES_PASSWORD": "", "REDIS_PASSWORD": "",
                               "DASHBOARD_TOKEN": "", "ALERT_WEBHOOK_SECRET": ""}


@pytest.mark.parametrize("key", ["sasl.password", "ssl.key.password", "ssl.key.pem", "sasl.oauthbearer.client.secret",
                                 "sasl.jaas.config"])
def test_secret_kafka_properties(key):
    assert c.is_secret_key(key)
    assert not c.is_secret_key("security.protocol") and not c.is_secret_key("ssl.ca.location")
