"""The configuration schema: one frozen Struct per section, so the keys, the defaults and the per-field
validation are one piece of code. `Config` is the whole file; `Settings` adds the secrets and the path."""
from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .base import Name, NonNegFloat, NonNegInt, Port, PositiveFloat, PositiveInt, Section
from .metric_rules import DetectionConfig, MetricUnits, ThresholdRule
from .alerting import AlertsConfig, FlapConfig, WebhookConfig  # noqa: F401 - re-exported
from .mqtt import BrokerStatsConfig, MqttConfig, TlsConfig  # noqa: F401 - re-exported
from .secret import Secrets
from .sources import SourceMapping
from .serving import DashboardConfig  # noqa: F401 - re-exported


class KafkaTopics(Section):
    raw: Name = "sensor-readings"
    # Dead letters by reason class: invalid input, processing failure, retry exhaustion.
    dead_letter: Name = "sensor-readings.dlq"
    dead_letter_failed: Name = "sensor-readings.dlq.failed"
    dead_letter_exhausted: Name = "sensor-readings.dlq.exhausted"


class KafkaConfig(Section):
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
    # When a poll brings only a few messages (a low rate), wait up to this long for more before the batch goes
    # to the sinks: every batch costs every sink a wake-up and a write. At 1,000 msg/s, 40 ms (with
    # sinks.postgres.flush_interval_ms 250 and mqtt.read_linger_ms 15) took the daemon from 153 to 103 CPU-s
    # per million messages, p99 to Redis 52 -> 91 ms. At high rates a poll brings enough and nothing waits.
    consume_linger_ms: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 40
    # Each partition's offsets must follow on (the raw topic is written without transactions or compaction).
    # refetch: a hole is fetched again from its first offset (the messages after it are read again, in order);
    # still missing after gap_refetch_attempts fetches and gap_refetch_wait_s, it is given up: an alert, /ready
    # not ready, and no commit at or past the hole. allow: for a topic that skips offsets legitimately
    # (compaction, transaction markers): holes are counted and passed over.
    offset_gaps: Literal["refetch", "allow"] = "refetch"
    gap_refetch_attempts: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    gap_refetch_wait_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0
    # How often the records missing in given-up holes become a reading kafka_offset_gap of sensor
    # kafka:<topic>:<partition> (thresholds.kafka_offset_gap), 0 once the hole is behind us (after a restart or rebalance).
    gap_report_interval_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0
    # Any librdkafka property (security.protocol, sasl.*, ssl.*), passed through unchanged.
    client: dict[str, str | int | float | bool] = {}


class RedisStreams(Section):
    readings: Name = "readings"
    aggregations: Name = "aggregations"
    alerts: Name = "alerts"
    logs: Name = "logs"


class RedisConfig(Section):
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
    # true: the sink writes RESP itself and reads replies in bulk (pipeline/sinks/redis_wire.py, written against
    # one exact redis-py version); false: redis-py's plain pipeline, slower, the same entries and keys.
    fast_path: bool = True


class PostgresConfig(Section):
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
    # A statement running longer is cancelled by the server (QueryCanceled, retried like an outage), so one stuck
    # statement (waiting on a lock that is never released, a runaway plan) cannot hold a sink for ever. 0: none.
    statement_timeout_ms: NonNegInt = 30000
    # The same for maintenance, whose single statements may run long: retention, partitions, rebuild. 0: none.
    # Migrations (migrations.py) run without one: an operator watches them, and a cancelled one is rolled back.
    maintenance_statement_timeout_ms: NonNegInt = 600000


class ProcessingConfig(Section):
    # Readings per Kafka consume call and the default flush size of the batch writers.
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=100000)] = 1000
    # How often timed work runs (alert evaluation, window closing on idle partitions).
    interval_s: PositiveFloat = 5.0
    # Bounded hand-off queues to each sink: this many of the sink's own full writes (x its batch_size records),
    # however the consumer cut its batches; while a store refuses, this many batches (runtime/record_queue.py).
    queue_max_batches: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 16
    shutdown_timeout_s: PositiveFloat = 20.0
    # Payload formats by name (pipeline/registry/formats.py), in the order their topic patterns are tried: the
    # first that matches decodes the message and gives its Kafka key. A plug-in format is added here by name.
    formats: Annotated[tuple[Annotated[str, msgspec.Meta(min_length=1, max_length=64)], ...],
                       msgspec.Meta(min_length=1)] = ("log", "json", "number")
    # First topic level of the `telegraf` and `telegraf_json` formats (Telegraf's outputs.mqtt default topic
    # `telegraf/{{ .Hostname }}/{{ .PluginName }}`); add "<root>/#" to mqtt.topics when selecting them.
    telegraf_topic_root: Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[^/+#]+$")] = "telegraf"


MetricName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=20)]


class ValidationConfig(Section):
    # Kafka's default message.max.bytes is 1 MB: larger payloads are truncated before Kafka and dead-lettered.
    max_payload_bytes: Annotated[int, msgspec.Meta(ge=64, le=900 * 1024)] = 65536
    max_readings_per_message: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 100
    max_future_skew_s: NonNegFloat = 300.0
    max_age_s: PositiveFloat = 30 * 86400.0
    default_type: Annotated[str, msgspec.Meta(min_length=1, max_length=20)] = "sensor"
    default_location: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    # JSON nested deeper than this (readings and log records) is refused as json_too_deep. Checked without
    # recursion; orjson itself stops at 1024, so the bound also keeps every later walk of the object shallow.
    max_json_depth: Annotated[int, msgspec.Meta(ge=2, le=512)] = 32
    # Which metric names are accepted: any (valid) name; `configured`: only metrics named in thresholds,
    # detection or units; or a list of names. Others are refused as metric_not_allowed.
    metrics: Literal["any", "configured"] | tuple[MetricName, ...] = "any"


class LimitsConfig(Section):
    """Bounds on what publishers can make the daemon remember (pipeline/stages/limits.py)."""

    # Distinct sensor ids (those already in the `sensors` table count); a reading of a new one beyond is
    # refused as too_many_sensors. The default admits a fleet of 100,000 devices.
    max_sensors: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 100_000
    # Distinct metrics per sensor; a new metric beyond is refused as too_many_metrics.
    max_metrics_per_sensor: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 50
    # At start, the metrics of windows that began this long ago are loaded (from the longest aggregation period no
    # longer than this: a 1d row exists only once its day is over)
    # (0: none; metrics then count from the start of the daemon, as they do when aggregation is off).
    metrics_lookback_s: Annotated[float, msgspec.Meta(ge=0, le=30 * 86400)] = 7200.0
    # Per-series state (running window values, detector history, cached rules, sink caches, Redis latest values,
    # the sensors counted against max_sensors) is released after this long without a reading, so one-shot ids
    # cannot pile up; a series that returns is rebuilt as at start-up. State an open alert needs stays.
    state_idle_s: Annotated[float, msgspec.Meta(ge=1, le=365 * 86400)] = 86400.0
    # Who may add a sensor. `open`: any publisher, by its first valid reading (whose type and location fill in
    # the registration once). `known`: only ids already in the `sensors` table (added with `python -m
    # pipeline.sensors`); a reading of any other id is refused as unknown_sensor, so nobody can pre-register
    # or squat on a device id. Either way a reading never changes a registered sensor's type or location.
    registration: Literal["open", "known"] = "open"
    # How often the daemon rereads the `sensors` table, to learn sensors added, relabelled or removed while it
    # runs (the command, plain SQL, another instance). One primary-key scan of at most max_sensors rows.
    registry_refresh_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 10.0
    # Once the table holds more than max_sensors ids (it keeps every sensor ever registered), an id past the
    # ones read is looked up by primary key before it is refused (known) or registered as new (open): at most
    # this many lookups per second (an id found absent is not asked again until the next reread).
    registry_lookups_per_s: Annotated[float, msgspec.Meta(ge=0, le=100_000)] = 1000.0


class SinkConfig(Section):
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=100000)] = 1000
    flush_interval_ms: Annotated[int, msgspec.Meta(ge=1, le=60000)] = 100


class SinksConfig(Section):
    # The sinks a daemon runs, by registered name, in order (pipeline/sinks/registry.py); unknown names are refused.
    use: tuple[Name, ...] = ("postgres", "redis", "dead_letter", "logs")
    # 250 ms: below about 4,000 readings/s a batch is written by time, not size, and each write costs about as
    # much as a few hundred readings; above it batches fill first and the interval never applies.
    postgres: SinkConfig = SinkConfig(flush_interval_ms=250)
    redis: SinkConfig = SinkConfig(flush_interval_ms=5)
    dead_letter: SinkConfig = SinkConfig(flush_interval_ms=200)
    alerts: SinkConfig = SinkConfig(flush_interval_ms=100)
    logs: SinkConfig = SinkConfig(flush_interval_ms=200)


class RetryConfig(Section):
    initial_interval_s: PositiveFloat = 0.1
    max_interval_s: PositiveFloat = 5.0
    multiplier: Annotated[float, msgspec.Meta(ge=1.0, le=10.0)] = 2.0
    jitter: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.2
    # A record a service refuses (not an outage) is tried this many times, then dead-lettered as
    # retry exhaustion. 1: at once. A refusal is about the record (a value the database rejects), so trying
    # again only repeats it, and each retry's backoff holds up the sink, and with it every partition.
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 1
    # How long an operation that can give up (webhook, dead-letter replay, start-up connections) keeps
    # trying. Sink writes during an outage never give up: they pause the pipeline until it returns.
    max_elapsed_s: PositiveFloat = 30.0


# A window length label: 10s, 1m, 5m, 1h, 1d (it is stored as is in aggregations.period, VARCHAR(10)).
PeriodLabel = Annotated[str, msgspec.Meta(pattern=r"^[1-9][0-9]{0,5}[smhd]$")]


class AggregationConfig(Section):
    enabled: bool = True
    # Tumbling windows on event time, one row per sensor, metric and period in `aggregations`.
    periods: tuple[PeriodLabel, ...] = ("1m", "5m", "1h", "1d")
    # A window closes once the partition's highest event time passed its end by this much.
    grace_s: NonNegFloat = 10.0
    # Readings older than the partition's watermark minus this go to the dead-letter topic (reason `late`);
    # younger late readings correct their (already written) window.
    max_lateness_s: PositiveFloat = 3600.0
    # A partition that received nothing for this long closes its due windows by the wall clock.
    idle_close_s: PositiveFloat = 30.0


class ReloadConfig(Section):
    # How often config.yaml is checked for changes (0: only SIGHUP reloads).
    watch_interval_s: NonNegFloat = 1.0


# One MQTT topic level (no separators or wildcards) and an app name usable inside a sensor id ("app:<name>").
TopicLevel = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[^/+#]+$")]
AppName = Annotated[str, msgspec.Meta(min_length=1, max_length=46, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")]


# A spool's bound (pipeline/agents/spool.py): from 64 KiB to 1 TiB.
SpoolBytes = Annotated[int, msgspec.Meta(ge=64 * 1024, le=1 << 40)]


class SystemAgentConfig(Section):
    """The host metrics collector the daemon can run as a thread (same code as `python -m pipeline.agents.system`)."""

    enabled: bool = False
    interval_s: Annotated[float, msgspec.Meta(ge=0.1, le=3600)] = 5.0
    host: Annotated[str, msgspec.Meta(max_length=200)] = ""  # empty: this machine's host name (sanitized)
    topic_root: TopicLevel = "system"
    disk_path: Name = "/"
    # Samples wait here until the broker acknowledged them (kept across restarts); empty: the state directory
    # ($STATE_DIRECTORY, else $XDG_STATE_HOME/realtime-pipeline, else ~/.local/state/realtime-pipeline).
    spool_path: Annotated[str, msgspec.Meta(max_length=4096)] = ""
    spool_max_bytes: SpoolBytes = 10 * 1024 * 1024  # beyond it the oldest are dropped and counted


class AgentsConfig(Section):
    system: SystemAgentConfig = SystemAgentConfig()


class LogsConfig(Section):
    """Application logs arriving on <topic_root>/<app>, their storage, counting and the daemon's own shipping."""

    topic_root: TopicLevel = "logs"
    max_message_bytes: Annotated[int, msgspec.Meta(ge=64, le=900 * 1024)] = 8192
    # A record's `extra` object: its size encoded as JSON and its nesting ({"a": 1} is 1 level). Beyond either,
    # the record is dead-lettered (log_extra_too_large, log_extra_too_deep) instead of failing a database write.
    max_extra_bytes: Annotated[int, msgspec.Meta(ge=64, le=900 * 1024)] = 8192
    max_extra_depth: Annotated[int, msgspec.Meta(ge=1, le=64)] = 8
    # Per app and level, records per window become measurements log_<level> of sensor app:<app>.
    count_window_s: Annotated[int, msgspec.Meta(ge=1, le=86400)] = 60
    # A window is counted this long after it ends, so records still on their way are included.
    count_grace_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0
    # An app keeps getting counts (zeros included) for this long after its last record.
    count_active_s: Annotated[int, msgspec.Meta(ge=1, le=30 * 86400)] = 3600
    ship_own: bool = False
    ship_app: AppName = "realtime-pipeline"
    ship_level: Literal["INFO", "WARNING", "ERROR", "CRITICAL"] = "WARNING"
    # The shipped records' spool, as agents.system.spool_path (empty: <state dir>/logship-<ship_app>.db).
    ship_spool_path: Annotated[str, msgspec.Meta(max_length=4096)] = ""
    ship_spool_max_bytes: SpoolBytes = 10 * 1024 * 1024


class RetentionConfig(Section):
    """How long each table and stream keeps data; 0 keeps it forever. Enforced by pipeline/storage/retention.py."""

    enabled: bool = True
    # How often the daemon's retention job runs (it also runs once shortly after start).
    interval_s: Annotated[float, msgspec.Meta(ge=10.0)] = 3600.0
    # Rows per DELETE: short transactions keep locks and WAL bursts small while writes continue.
    batch_size: Annotated[int, msgspec.Meta(ge=100, le=1_000_000)] = 10000
    measurements_days: NonNegFloat = 30.0
    # Per aggregation period; a period not listed is kept forever (aggregates outlive raw data).
    aggregations_days: dict[PeriodLabel, NonNegFloat] = msgspec.field(default_factory=lambda: {"1m": 7.0, "5m": 90.0, "1h": 730.0, "1d": 3650.0})
    # Resolved alerts only: open ones are kept whatever their age.
    alerts_days: NonNegFloat = 180.0
    logs_days: NonNegFloat = 30.0
    # Redis streams: entries older than this are trimmed (XTRIM MINID), on top of redis.stream_maxlen.
    redis_max_age_s: NonNegFloat = 7 * 86400.0


class StorageConfig(Section):
    """Partitioned history (`measurements`, `logs`): partition length and how many are made ahead (pipeline/storage/partitions.py)."""

    # Range partitions on `timestamp`, aligned to UTC midnight (7d: to Monday). Retention drops whole partitions,
    # so a partition lives up to one interval past its table's limit.
    partition_interval: Literal["1h", "6h", "1d", "7d"] = "1d"
    # Future partitions kept ready by the daemon (checked at start and every check_interval_s).
    partitions_ahead: Annotated[int, msgspec.Meta(ge=1, le=366)] = 3
    check_interval_s: Annotated[float, msgspec.Meta(ge=10.0)] = 3600.0


class SparkplugConfig(Section):
    # The Sparkplug B host application (format `sparkplug`, pipeline/operators/sparkplug/; docs/formats.md).
    # false: never publish a rebirth request (NCMD), for a deployment allowed to read only.
    rebirth_requests: bool = True
    # At most one rebirth request per edge node in this many seconds.
    rebirth_interval_s: PositiveFloat = 10.0
    # Set: this daemon is the primary host application <host_id>: it publishes spBv1.0/STATE/<host_id>, retained
    # ({"online": true, "timestamp": ms}; the MQTT will says false). Empty: no STATE messages.
    host_id: Annotated[str, msgspec.Meta(pattern=r"^[^/#+]*$", max_length=64)] = ""
    # Births kept per node and device (a restart reads data again by the birth before it, back to the last commit).
    births_kept: Annotated[int, msgspec.Meta(ge=2, le=64)] = 8
    # The sensor type of the readings (validation.default_type when empty).
    sensor_type: Annotated[str, msgspec.Meta(max_length=50)] = ""
    # A metric's name, normalised (as a mapping's rename) or as the node writes it -> the name stored (else the
    # naming rule's; a name longer than 20 characters is refused).
    rename: dict[Annotated[str, msgspec.Meta(min_length=1, max_length=500)], MetricName] = {}


class Config(Section):
    # Modules imported before the rest is checked: formats, detectors and sinks they register (config/plugins.py).
    plugins: list[str] = []
    instance_id: Annotated[str, msgspec.Meta(max_length=64)] = ""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    mqtt: MqttConfig = MqttConfig()
    kafka: KafkaConfig = KafkaConfig()
    redis: RedisConfig = RedisConfig()
    postgres: PostgresConfig = PostgresConfig()
    processing: ProcessingConfig = ProcessingConfig()
    validation: ValidationConfig = ValidationConfig()
    limits: LimitsConfig = LimitsConfig()
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
    sparkplug: SparkplugConfig = SparkplugConfig()
    # Mappings of payload dialects (pipeline/config/sources.py, docs/formats.md): tried before processing.formats.
    sources: tuple[SourceMapping, ...] = ()


class Settings(msgspec.Struct, frozen=True):
    """The validated config, the secrets and where they came from."""

    config: Config
    secrets: Secrets
    path: str  # the first file
    paths: tuple[str, ...] = ()  # every file, in merge order (`--config` repeated); empty: just `path`

    @property
    def files(self) -> tuple[str, ...]:
        """The config files this came from, in merge order."""
        return self.paths or (self.path,)
