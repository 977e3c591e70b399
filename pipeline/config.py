"""Configuration: read once from config.yaml plus environment, validated, frozen.

Every setting lives in a msgspec Struct below, so the schema, the defaults and the validation are
one piece of code. Environment variables override the file: ``PIPELINE__<SECTION>__<KEY>`` (double
underscores separate levels, e.g. ``PIPELINE__MQTT__PORT=1884``). Secrets come only from the
environment (see ``SECRET_ENV``) and are wrapped in :class:`Secret`, whose repr never shows them.
"""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

ENV_PREFIX = "PIPELINE__"
DEFAULT_PATH = Path(__file__).resolve().parent.parent / "config.yaml"

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class ConfigError(Exception):
    """A configuration problem; the message names the key and what was expected."""


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


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class TlsConfig(_Section):
    """TLS towards a service: the server certificate is verified against `ca_file` (or the system CAs)."""

    enabled: bool = False
    ca_file: str = ""        # empty: the system's CA bundle
    cert_file: str = ""      # client certificate, for brokers that authenticate clients by certificate
    key_file: str = ""
    # Skip host name and certificate verification: for a test bench only, never in production.
    insecure: bool = False


class BrokerStatsConfig(_Section):
    """The broker's own counters of messages it dropped, watched by a small client of the daemon's own."""

    enabled: bool = True
    # Counters the broker publishes (wildcards allowed). Mosquitto: every sys_interval seconds (default 10),
    # when the value changed. EMQX and HiveMQ publish theirs elsewhere (README, "Delivery guarantees").
    topics: tuple[Annotated[str, msgspec.Meta(min_length=1, max_length=200)], ...] = ("$SYS/broker/publish/messages/dropped",)
    # How often the growth seen becomes a reading `mqtt_dropped` of sensor broker:<host> (0 when none).
    report_interval_s: Annotated[float, msgspec.Meta(ge=1.0, le=3600)] = 10.0


class MqttConfig(_Section):
    host: Name = "localhost"
    port: Port = 1883
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    # A stable client id plus clean_session=false is what makes the broker keep our session (and
    # the QoS 1 messages queued for it) while the daemon restarts.
    client_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "realtime-pipeline"
    clean_session: bool = False
    session_expiry_s: NonNegInt = 86400
    username: str = ""
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 30
    topics: tuple[Name, ...] = ("sensors/#", "system/#", "logs/#")
    qos: Literal[0, 1] = 1
    # MQTT 5 Receive Maximum: how many unacknowledged QoS 1 messages the broker may send us.
    receive_maximum: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 1000
    reconnect_min_delay_s: PositiveFloat = 0.5
    reconnect_max_delay_s: PositiveFloat = 10.0
    tls: TlsConfig = TlsConfig()
    # Scale-out: several instances subscribe as one MQTT shared subscription group ($share/<group>/<filter>)
    # and the broker hands each message to one of them. Empty: off (a single instance). When set, the
    # client id becomes <client_id>-<instance_id> so every instance keeps its own persistent session.
    shared_group: Annotated[str, msgspec.Meta(pattern=r"^[^/#+$]*$", max_length=64)] = ""
    broker_stats: BrokerStatsConfig = BrokerStatsConfig()


class KafkaTopics(_Section):
    raw: Name = "sensor-readings"
    # Dead letters by reason class: invalid input, processing failure, retry exhaustion.
    dead_letter: Name = "sensor-readings.dlq"
    dead_letter_failed: Name = "sensor-readings.dlq.failed"
    dead_letter_exhausted: Name = "sensor-readings.dlq.exhausted"


class KafkaConfig(_Section):
    bootstrap_servers: Name = "localhost:9092"
    topics: KafkaTopics = KafkaTopics()
    partitions: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 4
    replication_factor: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    consumer_group: Name = "realtime-pipeline"
    # single: this daemon takes every partition itself (no group join) and holds a PostgreSQL advisory lock
    # keyed by the group id; group: the consumer group protocol (scale-out); auto: group when
    # mqtt.shared_group is set, else single.
    assignment: Literal["auto", "single", "group"] = "auto"
    # Group mode: no partitions for this long while the topic has uncommitted messages nobody consumes -> not ready.
    assignment_timeout_s: PositiveFloat = 30.0
    session_timeout_ms: Annotated[int, msgspec.Meta(ge=1000, le=300000)] = 10000
    heartbeat_interval_ms: Annotated[int, msgspec.Meta(ge=100, le=60000)] = 2000
    # fetch.wait.max.ms is the floor of end-to-end latency at low and medium rates.
    fetch_wait_max_ms: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 20
    # Batching on the way into Kafka: 5 ms cost the producer thread 5x the CPU of 15 ms at 10k msg/s.
    linger_ms: Annotated[int, msgspec.Meta(ge=0, le=10000)] = 15
    producer_queue_max_messages: Annotated[int, msgspec.Meta(ge=100, le=10_000_000)] = 100000
    poll_timeout_s: PositiveFloat = 0.1
    # Any librdkafka property (security.protocol, sasl.*, ssl.*), passed through unchanged.
    client: dict[str, str | int | float | bool] = {}


class RedisStreams(_Section):
    readings: Name = "readings"
    aggregations: Name = "aggregations"
    alerts: Name = "alerts"
    logs: Name = "logs"


class RedisConfig(_Section):
    host: Name = "localhost"
    port: Port = 6379
    db: Annotated[int, msgspec.Meta(ge=0, le=15)] = 0
    username: str = ""
    # Prefix for every key and stream the pipeline writes (lets several deployments share a Redis).
    key_prefix: str = ""
    streams: RedisStreams = RedisStreams()
    stream_maxlen: Annotated[int, msgspec.Meta(ge=100)] = 100000
    socket_timeout_s: PositiveFloat = 5.0
    tls: TlsConfig = TlsConfig()


class PostgresConfig(_Section):
    host: Name = "localhost"
    port: Port = 5432
    database: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")] = "sensor_data"
    user: Name = "postgres"
    maintenance_database: Name = "postgres"
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    pool_min: Annotated[int, msgspec.Meta(ge=1, le=100)] = 1
    pool_max: Annotated[int, msgspec.Meta(ge=1, le=100)] = 4
    connect_timeout_s: PositiveInt = 5
    # Skip readings already stored (unique sensor_id, metric, timestamp): exactly-once effect.
    # false: plain COPY, faster, but a redelivered reading then fails the batch on the unique key.
    deduplicate: bool = True
    # TLS files for sslmode verify-ca/verify-full and client-certificate authentication (libpq sslrootcert etc.).
    sslrootcert: str = ""
    sslcert: str = ""
    sslkey: str = ""


class ProcessingConfig(_Section):
    # Readings per Kafka consume call and the default flush size of the batch writers.
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=100000)] = 1000
    # How often timed work runs (alert evaluation, window closing on idle partitions).
    interval_s: PositiveFloat = 5.0
    # Bounded hand-off queues between threads, in batches.
    queue_max_batches: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 16
    shutdown_timeout_s: PositiveFloat = 20.0


class ValidationConfig(_Section):
    # Kafka's default message.max.bytes is 1 MB: larger payloads are truncated before Kafka and dead-lettered.
    max_payload_bytes: Annotated[int, msgspec.Meta(ge=64, le=900 * 1024)] = 65536
    max_readings_per_message: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 100
    max_future_skew_s: NonNegFloat = 300.0
    max_age_s: PositiveFloat = 30 * 86400.0
    default_type: Annotated[str, msgspec.Meta(min_length=1, max_length=20)] = "sensor"
    default_location: Annotated[str, msgspec.Meta(max_length=100)] | None = None


class UnitRule(_Section):
    """Readings of a metric sent in ``unit`` are converted to the canonical unit: value*scale+offset."""

    unit: Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
    scale: float = 1.0
    offset: float = 0.0


class MetricUnits(_Section):
    canonical: Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
    convert: tuple[UnitRule, ...] = ()


class Bounds(_Section):
    min: float | None = None
    max: float | None = None


class ThresholdRule(_Section):
    warning: Bounds = Bounds()
    critical: Bounds = Bounds()
    # An open alert clears only once the value is this far back inside its bound (hysteresis).
    deadband: NonNegFloat = 0.0
    # A value must stay beyond a bound this long (event time) before the alert opens; 0: at once.
    for_s: NonNegFloat = 0.0


class SinkConfig(_Section):
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=100000)] = 1000
    flush_interval_ms: Annotated[int, msgspec.Meta(ge=1, le=60000)] = 100


class SinksConfig(_Section):
    postgres: SinkConfig = SinkConfig(flush_interval_ms=100)
    redis: SinkConfig = SinkConfig(flush_interval_ms=5)
    dead_letter: SinkConfig = SinkConfig(flush_interval_ms=200)
    alerts: SinkConfig = SinkConfig(flush_interval_ms=100)
    logs: SinkConfig = SinkConfig(flush_interval_ms=200)


class RetryConfig(_Section):
    initial_interval_s: PositiveFloat = 0.1
    max_interval_s: PositiveFloat = 5.0
    multiplier: Annotated[float, msgspec.Meta(ge=1.0, le=10.0)] = 2.0
    jitter: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.2
    # A record a service refuses (not an outage) is tried this many times, then dead-lettered as
    # retry exhaustion.
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    # How long an operation that can give up (webhook, dead-letter replay, start-up connections) keeps
    # trying. Sink writes during an outage never give up: they pause the pipeline until it returns.
    max_elapsed_s: PositiveFloat = 30.0


class DashboardConfig(_Section):
    enabled: bool = True
    host: Name = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080  # 0: any free port (tests)
    # Also ask for DASHBOARD_TOKEN on read-only pages and /metrics (mutating endpoints always need it).
    require_token_for_reads: bool = False
    # Dependency probes (Kafka metadata, PostgreSQL and Redis pings) are reused for this long.
    probe_cache_s: PositiveFloat = 2.0
    # /ready fails for a sink that has work waiting but no successful write for this long.
    stale_write_after_s: PositiveFloat = 60.0
    # /ready fails when the consumer is further behind than this many messages (0: never).
    ready_max_consumer_lag: NonNegInt = 0
    # Seconds of per-second throughput and latency samples kept for the live charts.
    history_s: Annotated[int, msgspec.Meta(ge=10, le=3600)] = 300
    # A trend with no rows in `aggregations` is computed from `measurements` for ranges up to this long.
    raw_fallback_max_range_s: PositiveInt = 21600


# A window length label: 10s, 1m, 5m, 1h, 1d (it is stored as is in aggregations.period, VARCHAR(10)).
PeriodLabel = Annotated[str, msgspec.Meta(pattern=r"^[1-9][0-9]{0,5}[smhd]$")]
Severity = Literal["info", "warning", "critical"]


class AggregationConfig(_Section):
    enabled: bool = True
    # Tumbling windows on event time, one row per sensor, metric and period in `aggregations`.
    periods: tuple[PeriodLabel, ...] = ("1m", "5m", "1h")
    # A window closes once the partition's highest event time passed its end by this much.
    grace_s: NonNegFloat = 10.0
    # Readings older than the partition's watermark minus this go to the dead-letter topic (reason `late`);
    # younger late readings correct their (already written) window.
    max_lateness_s: PositiveFloat = 3600.0
    # A partition that received nothing for this long closes its due windows by the wall clock.
    idle_close_s: PositiveFloat = 30.0


class RateRule(_Section):
    """Largest allowed change per second (absolute), per severity."""

    warning: PositiveFloat | None = None
    critical: PositiveFloat | None = None
    deadband: NonNegFloat = 0.0
    # The change is measured over at least this long, so two readings a millisecond apart do not explode.
    min_interval_s: PositiveFloat = 1.0


class OutlierRule(_Section):
    """z-score of a reading against an EWMA mean and deviation of the sensor's metric."""

    z_warning: PositiveFloat | None = None
    z_critical: PositiveFloat | None = None
    alpha: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.05
    min_samples: PositiveInt = 30
    # Floor of the deviation, in the metric's unit: a perfectly flat signal does not turn every tiny change into an outlier.
    min_std: NonNegFloat = 0.0
    deadband: NonNegFloat = 0.5


class StuckRule(_Section):
    """The same value (within `tolerance`) `count` times in a row or for `seconds`; 0 turns a limit off."""

    count: NonNegInt = 0
    seconds: NonNegFloat = 0.0
    tolerance: NonNegFloat = 0.0
    severity: Severity = "warning"


class MetricDetection(_Section):
    rate: RateRule | None = None
    outlier: OutlierRule | None = None
    stuck: StuckRule | None = None


class MetricOverride(MetricDetection):
    """Per-sensor override: a detector given here replaces the metric's one whole; absent ones are inherited."""

    threshold: ThresholdRule | None = None


class SensorOverride(_Section):
    offline_after_s: NonNegFloat | None = None
    metrics: dict[str, MetricOverride] = {}


class DetectionConfig(_Section):
    enabled: bool = True
    # No reading from a sensor for this long opens an `offline` alert (0: off).
    offline_after_s: NonNegFloat = 300.0
    offline_severity: Severity = "warning"
    # Per metric: rate of change, statistical outlier, stuck sensor (thresholds live in `thresholds`).
    metrics: dict[str, MetricDetection] = {}
    # Per sensor id: offline_after_s and per-metric detector overrides.
    sensors: dict[str, SensorOverride] = {}


class WebhookConfig(_Section):
    url: Annotated[str, msgspec.Meta(pattern=r"^(https?://.+)?$")] = ""
    timeout_s: PositiveFloat = 5.0
    # Deliveries wait in a bounded queue; when it is full the newest is dropped and counted, never blocking.
    queue_max: Annotated[int, msgspec.Meta(ge=1, le=100000)] = 1000
    # How long one delivery is retried (with backoff) before it is given up and counted as failed.
    max_elapsed_s: PositiveFloat = 60.0


class AlertsConfig(_Section):
    enabled: bool = True
    # An open alert resolves after this many consecutive readings inside its bound by the deadband ...
    clear_readings: NonNegInt = 3
    # ... or after it has been inside that long (0: off). Both 0: the first clear reading resolves it.
    clear_seconds: NonNegFloat = 0.0
    webhook: WebhookConfig = WebhookConfig()


class ReloadConfig(_Section):
    # How often config.yaml is checked for changes (0: only SIGHUP reloads).
    watch_interval_s: NonNegFloat = 1.0


# One MQTT topic level (no separators or wildcards) and an app name usable inside a sensor id ("app:<name>").
TopicLevel = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[^/+#]+$")]
AppName = Annotated[str, msgspec.Meta(min_length=1, max_length=46, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")]


class SystemAgentConfig(_Section):
    """The host metrics collector the daemon can run as a thread (same code as `python -m pipeline.agents.system`)."""

    enabled: bool = False
    interval_s: Annotated[float, msgspec.Meta(ge=0.1, le=3600)] = 5.0
    host: Annotated[str, msgspec.Meta(max_length=200)] = ""  # empty: this machine's host name (sanitized)
    topic_root: TopicLevel = "system"
    disk_path: Name = "/"


class AgentsConfig(_Section):
    system: SystemAgentConfig = SystemAgentConfig()


class LogsConfig(_Section):
    """Application logs arriving on <topic_root>/<app>, their storage, counting and the daemon's own shipping."""

    topic_root: TopicLevel = "logs"
    max_message_bytes: Annotated[int, msgspec.Meta(ge=64, le=900 * 1024)] = 8192
    # Per app and level, records per window become measurements log_<level> of sensor app:<app>.
    count_window_s: Annotated[int, msgspec.Meta(ge=1, le=86400)] = 60
    # A window is counted this long after it ends, so records still on their way are included.
    count_grace_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0
    # An app keeps getting counts (zeros included) for this long after its last record.
    count_active_s: Annotated[int, msgspec.Meta(ge=1, le=30 * 86400)] = 3600
    ship_own: bool = False
    ship_app: AppName = "realtime-pipeline"
    ship_level: Literal["INFO", "WARNING", "ERROR", "CRITICAL"] = "WARNING"
class RetentionConfig(_Section):
    """How long each table and stream keeps data; 0 keeps it forever. Enforced by pipeline/retention.py."""

    enabled: bool = True
    # How often the daemon's retention job runs (it also runs once shortly after start).
    interval_s: Annotated[float, msgspec.Meta(ge=10.0)] = 3600.0
    # Rows per DELETE: short transactions keep locks and WAL bursts small while writes continue.
    batch_size: Annotated[int, msgspec.Meta(ge=100, le=1_000_000)] = 10000
    measurements_days: NonNegFloat = 30.0
    # Per aggregation period; a period not listed is kept forever (aggregates outlive raw data).
    aggregations_days: dict[PeriodLabel, NonNegFloat] = msgspec.field(default_factory=lambda: {"1m": 7.0, "5m": 90.0, "1h": 730.0})
    # Resolved alerts only: open ones are kept whatever their age.
    alerts_days: NonNegFloat = 180.0
    logs_days: NonNegFloat = 30.0
    # Redis streams: entries older than this are trimmed (XTRIM MINID), on top of redis.stream_maxlen.
    redis_max_age_s: NonNegFloat = 7 * 86400.0


class StorageConfig(_Section):
    """Partitioned history (`measurements`, `logs`): partition length and how many are made ahead (pipeline/partitions.py)."""

    # Range partitions on `timestamp`, aligned to UTC midnight (7d: to Monday). Retention drops whole partitions,
    # so a partition lives up to one interval past its table's limit.
    partition_interval: Literal["1h", "6h", "1d", "7d"] = "1d"
    # Future partitions kept ready by the daemon (checked at start and every check_interval_s).
    partitions_ahead: Annotated[int, msgspec.Meta(ge=1, le=366)] = 3
    check_interval_s: Annotated[float, msgspec.Meta(ge=10.0)] = 3600.0


class Config(_Section):
    instance_id: Annotated[str, msgspec.Meta(max_length=64)] = ""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    mqtt: MqttConfig = MqttConfig()
    kafka: KafkaConfig = KafkaConfig()
    redis: RedisConfig = RedisConfig()
    postgres: PostgresConfig = PostgresConfig()
    processing: ProcessingConfig = ProcessingConfig()
    validation: ValidationConfig = ValidationConfig()
    units: dict[str, MetricUnits] = {}
    thresholds: dict[str, ThresholdRule] = {}
    sinks: SinksConfig = SinksConfig()
    retry: RetryConfig = RetryConfig()
    dashboard: DashboardConfig = DashboardConfig()
    aggregation: AggregationConfig = AggregationConfig()
    detection: DetectionConfig = DetectionConfig()
    alerts: AlertsConfig = AlertsConfig()
    reload: ReloadConfig = ReloadConfig()
    agents: AgentsConfig = AgentsConfig()
    logs: LogsConfig = LogsConfig()
    retention: RetentionConfig = RetentionConfig()
    storage: StorageConfig = StorageConfig()


# Secrets are never read from config.yaml: only from these environment variables.
SECRET_ENV = {
    "mqtt_password": "MQTT_PASSWORD",
    "postgres_password": "POSTGRES_PASSWORD",
    "redis_password": "REDIS_PASSWORD",
    "dashboard_token": "DASHBOARD_TOKEN",
}

# Kafka secrets, also only from the environment: copied into kafka.client under the librdkafka property
# (so producer, consumer, admin, dead-letter writer and the dlq CLI all get them); redacted() masks them.
KAFKA_SECRET_ENV = {"KAFKA_SASL_PASSWORD": "sasl.password", "KAFKA_SSL_KEY_PASSWORD": "ssl.key.password"}


class Secrets(msgspec.Struct, frozen=True):
    mqtt_password: Secret
    postgres_password: Secret
    redis_password: Secret
    dashboard_token: Secret

    @classmethod
    def from_env(cls, env: dict[str, str]) -> "Secrets":
        return cls(**{k: Secret(env.get(v, "")) for k, v in SECRET_ENV.items()})


class Settings(msgspec.Struct, frozen=True):
    """The validated config, the secrets and where they came from."""

    config: Config
    secrets: Secrets
    path: str


def _set_path(tree: dict, keys: list[str], value: str) -> None:
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    # Environment values are text; YAML parsing gives lists, numbers and booleans their types.
    try:
        node[keys[-1]] = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        node[keys[-1]] = value


def apply_env(tree: dict, env: dict[str, str]) -> dict:
    """Overlay PIPELINE__A__B=value variables onto the parsed YAML tree."""
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            keys = [k.lower() for k in name[len(ENV_PREFIX):].split("__")]
            if all(keys):
                _set_path(tree, keys, value)
    return tree


def _describe(err: msgspec.ValidationError) -> str:
    text = str(err)
    message, sep, where = text.rpartition(" - at `")
    if not sep:
        message, where = text, "$"
    if where.startswith("key` in `"):  # a mapping's key is wrong, e.g. an aggregation period label
        where, message = where.removeprefix("key` in `"), f"invalid key: {message}"
    key = where.rstrip("`").removeprefix("$").lstrip(".").replace("[...]", "")
    if message.startswith("Object contains unknown field"):
        field = message.split("`")[1]
        full = f"{key}.{field}" if key else field
        return f"{full}: unknown key"
    return f"{key}: {message}"


def _check_dict_sections(tree: dict) -> None:
    """Validate dict-of-struct sections entry by entry so the error names the entry."""
    for section, kind in (("units", MetricUnits), ("thresholds", ThresholdRule)):
        _check_entries(section, tree.get(section) or {}, kind)
    _check_detection_entries(tree.get("detection"))


def _check_entries(where: str, entries: Any, kind: type) -> None:
    if entries is None:
        return
    if not isinstance(entries, dict):
        raise ConfigError(f"{where}: expected a mapping of name to settings")
    for name, value in entries.items():
        try:
            msgspec.convert(value, kind, strict=False)
        except msgspec.ValidationError as err:
            raise ConfigError(f"{where}.{name}.{_describe(err)}".replace(".: ", ": ")) from None


def _check_detection_entries(detection: Any) -> None:
    """detection.metrics.<metric> and detection.sensors.<id>.metrics.<metric>, named in errors."""
    if not isinstance(detection, dict):
        return  # missing, or the wrong type: the whole-tree conversion names it
    _check_entries("detection.metrics", detection.get("metrics"), MetricDetection)
    sensors = detection.get("sensors")
    _check_entries("detection.sensors", {k: {kk: vv for kk, vv in v.items() if kk != "metrics"}
                                         for k, v in sensors.items() if isinstance(v, dict)}
                   if isinstance(sensors, dict) else sensors, SensorOverride)
    for sensor, override in (sensors or {}).items():
        if isinstance(override, dict):
            _check_entries(f"detection.sensors.{sensor}.metrics", override.get("metrics"), MetricOverride)


def _check_bounds(where: str, rule: ThresholdRule) -> None:
    for level in ("warning", "critical"):
        b = getattr(rule, level)
        if b.min is not None and b.max is not None and b.min >= b.max:
            raise ConfigError(f"{where}.{level}: min must be below max")


def _check_levels(where: str, warning: float | None, critical: float | None) -> None:
    if warning is not None and critical is not None and warning > critical:
        raise ConfigError(f"{where}: the warning limit must not exceed the critical limit")


def _check_detection(cfg: Config) -> None:
    agg = cfg.aggregation
    if len(set(agg.periods)) != len(agg.periods):
        raise ConfigError("aggregation.periods: a period is listed twice")
    if agg.enabled and not agg.periods:
        raise ConfigError("aggregation.periods: expected at least one period while aggregation is enabled")
    if agg.max_lateness_s < agg.grace_s:
        raise ConfigError("aggregation.max_lateness_s: must not be below aggregation.grace_s")
    rules = [(f"detection.metrics.{m}", r) for m, r in cfg.detection.metrics.items()]
    for sensor, override in cfg.detection.sensors.items():
        for metric, r in override.metrics.items():
            where = f"detection.sensors.{sensor}.metrics.{metric}"
            rules.append((where, r))
            if r.threshold is not None:
                _check_bounds(f"{where}.threshold", r.threshold)
    for where, r in rules:
        if r.rate is not None:
            _check_levels(f"{where}.rate", r.rate.warning, r.rate.critical)
        if r.outlier is not None:
            _check_levels(f"{where}.outlier", r.outlier.z_warning, r.outlier.z_critical)


def _cross_checks(cfg: Config) -> None:
    if cfg.postgres.pool_min > cfg.postgres.pool_max:
        raise ConfigError("postgres.pool_min: must not exceed postgres.pool_max")
    if cfg.kafka.heartbeat_interval_ms >= cfg.kafka.session_timeout_ms:
        raise ConfigError("kafka.heartbeat_interval_ms: must be below kafka.session_timeout_ms")
    if cfg.retry.initial_interval_s > cfg.retry.max_interval_s:
        raise ConfigError("retry.initial_interval_s: must not exceed retry.max_interval_s")
    if cfg.mqtt.reconnect_min_delay_s > cfg.mqtt.reconnect_max_delay_s:
        raise ConfigError("mqtt.reconnect_min_delay_s: must not exceed mqtt.reconnect_max_delay_s")
    if not cfg.mqtt.topics:
        raise ConfigError("mqtt.topics: expected at least one topic filter")
    for metric, rule in cfg.thresholds.items():
        for level in ("warning", "critical"):
            b = getattr(rule, level)
            if b.min is not None and b.max is not None and b.min >= b.max:
                raise ConfigError(f"thresholds.{metric}.{level}: min must be below max")
    for section in ("mqtt", "redis"):
        tls = getattr(cfg, section).tls
        if bool(tls.cert_file) != bool(tls.key_file):
            raise ConfigError(f"{section}.tls.cert_file: a client certificate needs both cert_file and key_file")
    if bool(cfg.postgres.sslcert) != bool(cfg.postgres.sslkey):
        raise ConfigError("postgres.sslcert: a client certificate needs both sslcert and sslkey")
    r = cfg.retention
    if r.measurements_days and r.measurements_days * 86400 <= cfg.aggregation.max_lateness_s + cfg.aggregation.grace_s:
        # A late reading recomputes its window from the raw rows: they must still be there.
        raise ConfigError("retention.measurements_days: must exceed aggregation.max_lateness_s + grace_s")
    _check_detection(cfg)
    if cfg.agents.system.topic_root == cfg.logs.topic_root:
        raise ConfigError("agents.system.topic_root: must differ from logs.topic_root (that root carries log records)")
    # A source the daemon feeds itself must reach it: refuse a topic root nothing subscribes to.
    roots = {t.split("/", 1)[0] for t in cfg.mqtt.topics}
    if cfg.agents.system.enabled and not roots & {cfg.agents.system.topic_root, "#", "+"}:
        raise ConfigError(f"agents.system.topic_root: {cfg.agents.system.topic_root!r} is not covered by mqtt.topics")
    if cfg.logs.ship_own and not roots & {cfg.logs.topic_root, "#", "+"}:
        raise ConfigError(f"logs.ship_own: logs.topic_root {cfg.logs.topic_root!r} is not covered by mqtt.topics")


def parse(tree: Any, env: dict[str, str] | None = None) -> Config:
    """Validate a parsed YAML tree (plus environment overrides) into a frozen Config."""
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError("(top level): expected a mapping of sections")
    tree = apply_env(tree, env or {})
    for name, prop in KAFKA_SECRET_ENV.items():
        if (env or {}).get(name):
            kafka = tree.setdefault("kafka", {}) if isinstance(tree.get("kafka", {}), dict) else {}
            if isinstance(kafka.get("client", {}), dict):
                kafka.setdefault("client", {})[prop] = env[name]  # type: ignore[index]
    _check_dict_sections(tree)
    try:
        cfg = msgspec.convert(tree, Config, strict=False)
    except msgspec.ValidationError as err:
        raise ConfigError(_describe(err)) from None
    if not cfg.instance_id:
        cfg = msgspec.structs.replace(cfg, instance_id=socket.gethostname()[:64])
    if cfg.kafka.assignment == "auto":  # resolved once: scale-out (a shared MQTT subscription) needs the group
        mode = "group" if cfg.mqtt.shared_group else "single"
        cfg = msgspec.structs.replace(cfg, kafka=msgspec.structs.replace(cfg.kafka, assignment=mode))
    _cross_checks(cfg)
    return cfg


def load(path: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> Settings:
    """Read config.yaml (or `path`), apply environment overrides, validate and freeze."""
    if env is None:
        env = dict(os.environ)
    file = Path(path) if path else Path(env.get("PIPELINE_CONFIG", DEFAULT_PATH))
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{file}: cannot read config file ({err.strerror})") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{file}:{where}: invalid YAML") from None
    return Settings(config=parse(tree, env), secrets=Secrets.from_env(env), path=str(file))


def load_for_cli(path: str | os.PathLike | None = None) -> Settings:
    """For command-line entry points: .env, then the config; an invalid config prints one line naming the
    key and exits with status 2."""
    load_dotenv_file()
    try:
        return load(path)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def load_dotenv_file(path: str | os.PathLike = ".env") -> None:
    """Load .env into os.environ if present; real environment variables win."""
    from dotenv import load_dotenv

    load_dotenv(path, override=False)


def env_names(struct: type = Config, prefix: str = ENV_PREFIX) -> list[str]:
    """Every environment variable that can override a leaf setting (for .env.example and docs)."""
    names = []
    for field in msgspec.structs.fields(struct):
        typ = field.type
        if isinstance(typ, type) and issubclass(typ, _Section):
            names.extend(env_names(typ, f"{prefix}{field.name.upper()}__"))
        else:
            names.append(f"{prefix}{field.name.upper()}")
    return names


# librdkafka properties under kafka.client whose values are secret (sasl.password, ssl.key.password, ...).
_SECRET_WORDS = ("password", "secret", "token", "key.pem", "credentials", "sasl.jaas.config")
MASK = "***"


def is_secret_key(name: str) -> bool:
    """True for a kafka.client property whose value must never be shown."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def redacted(settings: Settings) -> dict:
    """The effective configuration as plain data, every secret masked: for --check-config and /api output."""
    tree = msgspec.to_builtins(settings.config)
    client = tree["kafka"]["client"]
    for name in client:
        if is_secret_key(name):
            client[name] = MASK
    secrets = {SECRET_ENV[f.name]: (MASK if getattr(settings.secrets, f.name) else "")
               for f in msgspec.structs.fields(Secrets)}
    return {"path": settings.path, "config": tree, "secrets": secrets}
