"""Every metric the pipeline exports, declared in one place with an injectable registry.

Labels are bounded: stage, sink, reason, operation names. Never a sensor id.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """All pipeline metrics on one registry (a fresh one per test, the default one in the daemon)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry = registry if registry is not None else CollectorRegistry()
        ns = "pipeline"
        self.mqtt_received = Counter("mqtt_messages_received", "MQTT messages received", namespace=ns, registry=registry)
        self.mqtt_retained_ignored = Counter("mqtt_retained_ignored", "Retained copies the broker sent because we subscribed (mqtt.retained: ignore): acknowledged, not stored again", namespace=ns, registry=registry)
        self.mqtt_resends = Counter("mqtt_resends_recognised", "MQTT messages the broker sent again (DUP) that kept the receive stamp, so the identity, of their first delivery", namespace=ns, registry=registry)
        self.mqtt_connected = Gauge("mqtt_connected", "1 while connected to the MQTT broker", namespace=ns, registry=registry)
        # The broker's own counters (mqtt.broker_stats.topics; the topic is configured, so the label is bounded).
        self.broker_dropped = Gauge("mqtt_broker_messages_dropped", "Messages the MQTT broker reports it dropped (its counter, since it started)", ["topic"], namespace=ns, registry=registry)
        self.broker_drops_seen = Counter("mqtt_broker_drops_seen", "Growth of the broker's dropped-messages counter seen since this daemon started (topic: the rate topic when estimated from it before a counter value arrived)", ["topic"], namespace=ns, registry=registry)
        self.broker_drop_rate = Gauge("mqtt_broker_drop_rate_per_minute", "The MQTT broker's moving average of messages dropped per minute (mqtt.broker_stats.recent_rate_topic)", namespace=ns, registry=registry)
        self.kafka_produced = Counter("kafka_messages_produced", "Messages confirmed by Kafka", ["topic_kind"], namespace=ns, registry=registry)
        self.kafka_produce_errors = Counter("kafka_produce_errors", "Failed Kafka deliveries (retried)", namespace=ns, registry=registry)
        self.kafka_backpressure = Counter("kafka_producer_backpressure", "Times the producer queue was full", namespace=ns, registry=registry)
        self.kafka_consumed = Counter("kafka_messages_consumed", "Messages consumed from Kafka", namespace=ns, registry=registry)
        self.kafka_commits = Counter("kafka_commits", "Offset commits", namespace=ns, registry=registry)
        self.consumer_paused = Gauge("kafka_consumer_paused", "1 while consumption is paused because a sink is behind", namespace=ns, registry=registry)
        self.consumer_stalled = Gauge("kafka_consumer_stalled", "1 while the consumer (group mode) has had no partitions for kafka.assignment_timeout_s while messages wait and nobody commits", namespace=ns, registry=registry)
        self.offset_gaps = Counter("kafka_offset_gaps", "Holes in a partition's offsets, by event: detected, refetched (the fetch again delivered them), given_up (still missing after kafka.gap_refetch_*: commits held at the hole), allowed (kafka.offset_gaps allow)", ["event"], namespace=ns, registry=registry)
        self.offset_gap_dropped = Counter("kafka_offset_gap_dropped", "Messages not processed as fetched: past a hole (read again in order after it), or delivered again after being read", namespace=ns, registry=registry)
        self.offset_gap_missing = Gauge("kafka_offset_gap_missing", "Records missing in holes given up on a partition this consumer holds (its commits stop at the hole)", ["partition"], namespace=ns, registry=registry)
        self.consumer_lag = Gauge("kafka_consumer_lag", "Messages behind the high watermark", ["partition"], namespace=ns, registry=registry)
        self.stage_out = Counter("stage_records_out", "Records a stage passed on", ["stage"], namespace=ns, registry=registry)
        self.invalid = Counter("invalid_records", "Records refused, by reason", ["stage", "reason"], namespace=ns, registry=registry)
        # Format operators (pipeline/runtime/format_operator.py) and the Sparkplug B host (pipeline/operators/sparkplug).
        self.format_operator_seconds = Histogram("format_operator_seconds", "Time a format operator took per batch, by format", ["format"], buckets=DURATION_BUCKETS, namespace=ns, registry=registry)
        self.sparkplug_messages = Counter("sparkplug_messages", "Sparkplug B messages handled by the host application, by message type", ["type"], namespace=ns, registry=registry)
        self.sparkplug_metrics_skipped = Counter("sparkplug_metrics_skipped", "Sparkplug B metrics not stored, by reason (string, dataset, template, array, bytes, null, unknown_alias, ...; stale_death: an NDEATH whose bdSeq is not the current birth's)", ["reason"], namespace=ns, registry=registry)
        self.sparkplug_rebirth_requests = Counter("sparkplug_rebirth_requests", "Rebirth requests (NCMD Node Control/Rebirth) by cause (seq_gap, unknown_alias, before_birth) and outcome (sent, rate_limited, disabled, not_sent)", ["cause", "outcome"], namespace=ns, registry=registry)
        self.sparkplug_births_stored = Counter("sparkplug_births_stored", "Sparkplug B births and deaths made durable (table sparkplug_births)", namespace=ns, registry=registry)
        self.sparkplug_offline = Counter("sparkplug_offline_marks", "Sensors marked offline at once by an NDEATH or DDEATH", namespace=ns, registry=registry)
        self.format_values_skipped = Counter("format_values_skipped", "Values a built-in payload format skipped, neither stored nor refused (text fields of line protocol and Telegraf JSON)", ["format"], namespace=ns, registry=registry)
        self.dead_lettered = Counter("dead_letters", "Records sent to a dead-letter topic", ["kind", "reason"], namespace=ns, registry=registry)
        # Mappings (config `sources:`): the label is a configured mapping name, so it stays bounded.
        self.mapping_messages = Counter("mapping_messages", "Messages a mapping took, by outcome: decoded, refused (dead-lettered with the mapping's name), ignored (its ignore topics)", ["mapping", "outcome"], namespace=ns, registry=registry)
        self.mapping_readings = Counter("mapping_readings", "Readings a mapping made of its messages (before validation)", ["mapping"], namespace=ns, registry=registry)
        self.mapping_readings_refused = Counter("mapping_readings_refused", "Readings a mapping made that validation refused (a name too long, a time out of range, ...)", ["mapping"], namespace=ns, registry=registry)
        self.mapping_text_skipped = Counter("mapping_text_skipped", "Text values a mapping skipped (not numbers, not in its text_values)", ["mapping"], namespace=ns, registry=registry)
        self.sink_written = Counter("sink_records_written", "Records durably written", ["sink"], namespace=ns, registry=registry)
        self.sink_batch = Histogram("sink_batch_size", "Records per sink write", ["sink"], buckets=BATCH_BUCKETS, namespace=ns, registry=registry)
        self.sink_write_seconds = Histogram("sink_write_seconds", "Duration of one sink write", ["sink"], buckets=DURATION_BUCKETS, namespace=ns, registry=registry)
        self.sink_last_success = Gauge("sink_last_success_timestamp_seconds", "When the sink last wrote successfully", ["sink"], namespace=ns, registry=registry)
        self.sink_feed_lag = Gauge("sink_feed_lag", "Records in the raw topic a best-effort sink's own feed has not yet had written (it catches up on its own; never holds commits)", ["sink"], namespace=ns, registry=registry)
        self.sink_blocked = Gauge("sink_blocked", "1 while the sink holds a batch because its store is away or refuses writes (out of memory, read-only, no privilege, disk full, ...); the store's message is on /ready and in the log", ["sink"], namespace=ns, registry=registry)
        self.retries = Counter("retries", "Retried operations", ["operation"], namespace=ns, registry=registry)
        self.queue_depth = Gauge("queue_depth", "Batches waiting in a hand-off queue", ["queue"], namespace=ns, registry=registry)
        self.readings_deduplicated = Counter("readings_deduplicated", "Readings not stored because their identity (sensor, metric, timestamp) is stored already: redelivery (same value) or conflict (another value; the first one stays)", ["reason"], namespace=ns, registry=registry)
        self.sensors_registered = Counter("sensors_registered", "Sensors inserted by automatic registration", namespace=ns, registry=registry)
        self.e2e_latency = Histogram("end_to_end_latency_seconds", "From MQTT receive to durable write", ["sink"], buckets=LATENCY_BUCKETS, namespace=ns, registry=registry)
        self.device_latency = Histogram("device_latency_seconds", "From device timestamp to durable write", ["sink"], buckets=LATENCY_BUCKETS, namespace=ns, registry=registry)
        self.thread_alive = Gauge("thread_alive", "1 while the worker thread runs", ["thread"], namespace=ns, registry=registry)
        # -- windows, alerts, config reload -------------------------------------------------------
        self.windows_closed = Counter("aggregation_windows_closed", "Window rows written (closed windows and late corrections)", ["period"], namespace=ns, registry=registry)
        self.window_corrections = Counter("aggregation_late_corrections", "Closed windows reopened by a late reading", ["period"], namespace=ns, registry=registry)
        self.windows_pending = Gauge("aggregation_windows_pending", "Sensor/metric windows holding readings not folded into a row yet", namespace=ns, registry=registry)
        self.aggregation_errors = Counter("aggregation_errors", "Failed attempts to close windows (they stay pending and are retried)", namespace=ns, registry=registry)
        self.watermark = Gauge("aggregation_watermark_timestamp_seconds", "Event-time watermark of a Kafka partition", ["partition"], namespace=ns, registry=registry)
        self.alert_transitions = Counter("alert_transitions", "Alert transitions: opened, escalated, flapping (held open), resolved", ["type", "event", "severity"], namespace=ns, registry=registry)
        self.alerts_open = Gauge("alerts_open", "Open alerts held by the evaluator", ["type"], namespace=ns, registry=registry)
        self.webhook_deliveries = Counter("alert_webhook_deliveries", "Alert notification deliveries over all channels: delivered, failed (after retries), dropped (queue full)", ["result"], namespace=ns, registry=registry)
        self.config_reload_ok = Gauge("config_reload_ok", "1 if the last config reload was applied (or none was tried), 0 if it was refused", namespace=ns, registry=registry)
        self.config_reload_ok.set(1)
        self.config_last_reload = Gauge("config_last_reload_timestamp_seconds", "When the configuration was last loaded successfully", namespace=ns, registry=registry)
        self.config_reloads = Counter("config_reloads", "Config reload attempts by result: applied, unchanged, refused", ["result"], namespace=ns, registry=registry)
        # Alerts: type and severity come from our own rules, never from devices, so they stay bounded.
        # (opened/escalated/flapping/resolved counts are alert_transitions, above)
        self.alerts_open_db = Gauge("alerts_open_in_database", "Open alerts in the database, by severity (all instances)", ["severity"], namespace=ns, registry=registry)
        # Monitoring: kept fresh by the dashboard's monitor threads (every second, probes every 5 s).
        self.sink_last_success_age = Gauge("sink_last_success_age_seconds", "Seconds since the sink last wrote successfully (since start if never)", ["sink"], namespace=ns, registry=registry)
        self.ready = Gauge("ready", "1 while /ready answers 200 (every check passes), 0 while it answers 503; refreshed with the dependency probes", namespace=ns, registry=registry)
        self.dependency_up = Gauge("dependency_up", "1 while the readiness probe of a dependency passes", ["dependency"], namespace=ns, registry=registry)
        self.http_requests = Counter("dashboard_http_requests", "Dashboard HTTP requests, by route and status", ["route", "status"], namespace=ns, registry=registry)
        # CPU, memory and open files of the daemon, as every Prometheus target exports them.
        ProcessCollector(registry=registry)
        self.log_count_readings = Counter("log_count_readings", "Log-count measurements handed to the sinks (new or corrected)", namespace=ns, registry=registry)
        self.logship_records = Gauge("logship_records", "The daemon's own log records shipped over MQTT, by outcome", ["outcome"], namespace=ns, registry=registry)
        self.system_samples = Counter("system_agent_samples", "Host metric samples published by the built-in system agent", ["outcome"], namespace=ns, registry=registry)
        # The disk spools of the built-in agent and the own-log handler (pipeline/agents/spool.py), by source.
        self.spool_backlog = Gauge("spool_backlog_messages", "Messages spooled and not yet acknowledged by the broker", ["source"], namespace=ns, registry=registry)
        self.spool_backlog_bytes = Gauge("spool_backlog_bytes", "Size of the spooled messages, as counted against the bound", ["source"], namespace=ns, registry=registry)
        self.spool_dropped = Gauge("spool_dropped_messages", "Messages dropped since start: oldest beyond the spool's bound, or refused by the disk", ["source"], namespace=ns, registry=registry)
        # -- retention ----------------------------------------------------------------------------
        self.retention_deleted = Counter("retention_deleted", "Rows and stream entries removed by retention", ["target"], namespace=ns, registry=registry)
        self.retention_runs = Counter("retention_runs", "Retention passes by result: ok, skipped (another instance), failed", ["result"], namespace=ns, registry=registry)
        self.retention_partitions_dropped = Counter("retention_partitions_dropped", "Partitions detached and dropped whole by retention", ["target"], namespace=ns, registry=registry)
        # -- partitioned history (pipeline/storage/partitions.py) --------------------------------------------
        self.partitions_created = Counter("storage_partitions_created", "Partitions made: ahead (migrations, the daemon's timer) or on_demand (a write found none)", ["table", "reason"], namespace=ns, registry=registry)
        self.partition_checks = Counter("storage_partition_checks", "Checks of the partitions ahead by result: ok, failed", ["result"], namespace=ns, registry=registry)
        self.retention_last_success = Gauge("retention_last_success_timestamp_seconds", "When a retention pass last completed", namespace=ns, registry=registry)
        # -- alert notifications (pipeline/sinks/notify): channel is a configured name, reason a fixed word --
        self.notifications_sent = Counter("alert_notifications_sent", "Notification messages delivered (a digest counts once)", ["channel"], namespace=ns, registry=registry)
        self.notifications_suppressed = Counter("alert_notifications_suppressed", "Alert notifications not sent: renotify (a repeat within alerts.notifications.renotify_s), duplicate (a resolution sent already), unrouted (no channel takes it), or the silencer's reason (snoozed, acknowledged, maintenance, ...)", ["reason"], namespace=ns, registry=registry)
        self.notifications_failed = Counter("alert_notifications_failed", "Notification messages given up after retries or refused (dead-lettered as notification_failed)", ["channel"], namespace=ns, registry=registry)
        self.notification_digests = Counter("alert_notification_digests", "Digest messages made: alerts collected while a channel had more than digest.max_alerts within digest.window_s", ["channel"], namespace=ns, registry=registry)
