"""Configuration: read once from config.yaml plus environment, validated, frozen.

Every setting lives in a msgspec Struct (schema.py, metric_rules.py), so the schema, the defaults and the
per-field validation are one piece of code; checks.py adds the rules that span fields. Environment variables
override the file: ``PIPELINE__<SECTION>__<KEY>`` (double underscores separate levels, e.g.
``PIPELINE__MQTT__PORT=1884``; loading.py). Secrets come only from the environment (see ``SECRET_ENV``) and
are wrapped in :class:`Secret`, whose repr never shows them (secret.py); redact.py masks them for output.
"""
from .alerting import ChannelConfig, DigestConfig, NotificationsConfig, channel_urls
from .base import Name, NonNegFloat, NonNegInt, Port, PositiveFloat, PositiveInt
from .errors import ConfigError
from .loading import DEFAULT_PATH, ENV_PREFIX, apply_env, env_names, load, load_dotenv_file, load_for_cli, parse
from .metric_rules import (
    Bounds, DetectionConfig, MetricDetection, MetricOverride, MetricUnits, OutlierRule, RateRule, SensorOverride,
    Severity, StuckRule, ThresholdRule, UnitRule,
)
from .redact import MASK, is_secret_key, redacted
from .schema import (
    AgentsConfig, AggregationConfig, AlertsConfig, AppName, BrokerStatsConfig, Config, DashboardConfig, KafkaConfig,
    KafkaTopics, LogsConfig, MqttConfig, PeriodLabel, PostgresConfig, ProcessingConfig, RedisConfig, RedisStreams,
    ReloadConfig, RetentionConfig, RetryConfig, Settings, SinkConfig, SinksConfig, StorageConfig, SystemAgentConfig,
    TlsConfig,
    TopicLevel, ValidationConfig, WebhookConfig,
)
from .secret import KAFKA_SECRET_ENV, SECRET_ENV, Secret, Secrets

__all__ = [
    "ChannelConfig", "DigestConfig", "NotificationsConfig", "channel_urls",
    "AgentsConfig", "AggregationConfig", "AlertsConfig", "AppName", "Bounds", "BrokerStatsConfig", "Config",
    "ConfigError", "DEFAULT_PATH", "DashboardConfig", "DetectionConfig", "ENV_PREFIX", "KAFKA_SECRET_ENV",
    "KafkaConfig", "KafkaTopics", "LogsConfig", "MASK", "MetricDetection", "MetricOverride", "MetricUnits",
    "MqttConfig", "Name", "NonNegFloat", "NonNegInt", "OutlierRule", "PeriodLabel", "Port", "PositiveFloat",
    "PositiveInt", "PostgresConfig", "ProcessingConfig", "RateRule", "RedisConfig", "RedisStreams", "ReloadConfig",
    "RetentionConfig", "RetryConfig", "SECRET_ENV", "Secret", "Secrets", "SensorOverride", "Settings", "Severity",
    "SinkConfig", "SinksConfig", "StorageConfig", "StuckRule", "SystemAgentConfig", "ThresholdRule", "TlsConfig", "TopicLevel",
    "UnitRule", "ValidationConfig", "WebhookConfig", "apply_env", "env_names", "is_secret_key", "load",
    "load_dotenv_file", "load_for_cli", "parse", "redacted",
]
