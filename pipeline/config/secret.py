"""Secrets: read only from the environment, never from config.yaml, and wrapped so they never print."""
from __future__ import annotations

import msgspec


class Secret:
    """A string that never prints itself: repr/str show '***'."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__


# Secrets are never read from config.yaml: only from these environment variables.
SECRET_ENV = {
    "mqtt_password": "MQTT_PASSWORD",
    "postgres_password": "POSTGRES_PASSWORD",
    "redis_password": "REDIS_PASSWORD",
    "dashboard_token": "DASHBOARD_TOKEN",
    # Key of the HMAC signature on alert webhook deliveries (X-Pipeline-Signature); empty: unsigned.
    "alert_webhook_secret": "ALERT_WEBHOOK_SECRET",
}

# Kafka secrets, also only from the environment: copied into kafka.client under the librdkafka property
# (so producer, consumer, admin, dead-letter writer and the dlq CLI all get them); redacted() masks them.
KAFKA_SECRET_ENV = {"KAFKA_SASL_PASSWORD": "sasl.password", "KAFKA_SSL_KEY_PASSWORD": "ssl.key.password"}


class Secrets(msgspec.Struct, frozen=True):
    """The secrets the pipeline knows, each from its variable in `SECRET_ENV` (empty when unset)."""

    mqtt_password: Secret
    postgres_password: Secret
    redis_password: Secret
    dashboard_token: Secret
    alert_webhook_secret: Secret

    @classmethod
    def from_env(cls, env: dict[str, str]) -> "Secrets":
        return cls(**{k: Secret(env.get(v, "")) for k, v in SECRET_ENV.items()})
