"""Production settings: TLS, shared subscriptions, Kafka secrets, retention keys and the redacted view."""
import json

import pytest

from pipeline import config as c
from pipeline.clients.postgres import conninfo
from pipeline.ingest.mqtt_bridge import client_id_suffix, subscription_filters


def test_tls_defaults_verify_and_client_cert_needs_both_files():
    cfg = c.parse({"mqtt": {"tls": {"enabled": True, "ca_file": "/etc/ca.pem"}}}, {})
    assert cfg.mqtt.tls.enabled and cfg.mqtt.tls.insecure is False
    with pytest.raises(c.ConfigError, match=r"^redis.tls.cert_file: a client certificate needs both"):
        c.parse({"redis": {"tls": {"enabled": True, "cert_file": "/c.pem"}}}, {})
    with pytest.raises(c.ConfigError, match=r"^mqtt.tls.verify: unknown key"):
        c.parse({"mqtt": {"tls": {"verify": False}}}, {})


def test_postgres_tls_files_reach_libpq():
    cfg = c.parse({"postgres": {"sslmode": "verify-full", "sslrootcert": "/ca.pem"}}, {})
    params = conninfo(cfg.postgres, c.Secret("pw"))
    assert params["sslmode"] == "verify-full" and params["sslrootcert"] == "/ca.pem" and "sslcert" not in params


def test_shared_subscription_filters_and_distinct_client_ids():
    single = c.parse({"mqtt": {"topics": ["sensors/#"]}}, {})
    assert subscription_filters(single.mqtt) == ["sensors/#"] and client_id_suffix(single.mqtt, "a") == ""
    shared = c.parse({"mqtt": {"topics": ["sensors/#", "system/#"], "shared_group": "pipe"}},
                     {"PIPELINE__INSTANCE_ID": "node-2"})
    assert subscription_filters(shared.mqtt) == ["$share/pipe/sensors/#", "$share/pipe/system/#"]
    assert client_id_suffix(shared.mqtt, shared.instance_id) == "-node-2"
    with pytest.raises(c.ConfigError, match=r"^mqtt.shared_group"):
        c.parse({"mqtt": {"shared_group": "a/b"}}, {})


def test_kafka_secrets_from_environment_are_masked_in_redacted_output():
    env = {"KAFKA_SASL_PASSWORD": "s3cr3t-sasl", "MQTT_PASSWORD": "s3cr3t-mqtt",
           "PIPELINE__KAFKA__CLIENT": "{security.protocol: SASL_SSL, sasl.mechanism: PLAIN, sasl.username: svc}"}
    settings = c.Settings(config=c.parse({}, env), secrets=c.Secrets.from_env(env), path="x.yaml")
    assert settings.config.kafka.client["sasl.password"] == "s3cr3t-sasl"  # reaches every librdkafka client
    view = c.redacted(settings)
    text = json.dumps(view)
    assert "s3cr3t" not in text
    assert view["config"]["kafka"]["client"] == {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
                                                 "sasl.username": "svc", "sasl.password": "***"}
    assert view["secrets"] == {"MQTT_PASSWORD": "***", "POSTGRES_PASSWORD": "", "REDIS_PASSWORD": "",
                               "DASHBOARD_TOKEN": ""}


@pytest.mark.parametrize("key", ["sasl.password", "ssl.key.password", "ssl.key.pem", "sasl.oauthbearer.client.secret",
                                 "sasl.jaas.config"])
def test_secret_kafka_properties(key):
    assert c.is_secret_key(key)
    assert not c.is_secret_key("sasl.username")


def test_retention_defaults_and_validation():
    r = c.parse({}, {}).retention
    assert (r.measurements_days, r.alerts_days, r.logs_days) == (30, 180, 30)
    assert r.aggregations_days == {"1m": 7, "5m": 90, "1h": 730}
    with pytest.raises(c.ConfigError, match=r"^retention.aggregations_days"):
        c.parse({"retention": {"aggregations_days": {"1 minute": 7}}}, {})
    with pytest.raises(c.ConfigError, match=r"^retention.measurements_days: Expected `float` >= 0"):
        c.parse({}, {"PIPELINE__RETENTION__MEASUREMENTS_DAYS": "-1"})
