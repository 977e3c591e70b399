"""The benchmark's peer: the consume -> decode -> validate -> 1-minute window -> PostgreSQL part of our
pipeline, written the idiomatic Quix Streams way (quixstreams 3.28.1), so that its CPU per message can be
set beside ours.

    python -m pipeline.tools.bench.peer_quix --bootstrap 127.0.0.1:9092 --topic T --group G \\
        --postgres-dsn "host=127.0.0.1 port=5432 user=postgres dbname=D" \\
        --readings-table R --aggregations-table A --state-dir DIR

Input: the records our MQTT bridge produces (key = sensor id, value = the MQTT payload, JSON, either
`{"metric": m, "value": v, "timestamp": t, ...}` or `{"readings": {m: v, ...}, "timestamp": t, ...}`).
Headers are ignored. It runs until SIGTERM/SIGINT, then Quix flushes the sinks and commits, and this
prints one JSON line on stdout: {"consumed", "dropped_invalid", "readings_written", "aggregations_written"}.

The data flow, all of it Quix's documented API:
- `app.topic(value_deserializer="json", key_deserializer="str", timestamp_extractor=...)`: the event time
  of every record is the payload's `timestamp` (Kafka's timestamp is only the receive time).
- `apply` normalises a payload to {"timestamp", "readings": {metric: value}}, or None if invalid; `filter`
  drops the Nones. Validation, in the spirit of pipeline/stages/validate.py: a non-empty sensor id (the
  key); metric names non-empty strings of at most 64 characters; values finite numbers, not booleans;
  timestamp finite epoch seconds a TIMESTAMP can hold. A bad reading inside a several-readings message is
  dropped alone; anything else drops the whole message. Undecodable JSON never reaches the dataframe:
  Quix hands it to `on_consumer_error`, which counts it as dropped and skips it.
- Branch 1: `apply(expand=True)` gives one row per reading -> `PostgreSQLSink` (readings table).
- Branch 2: `tumbling_window(1 min).reduce(...).final()` keyed by the record key, the sensor id, with a
  per-metric running [sum, min, max, count] -> `apply(expand=True)` gives one row per (sensor, metric,
  window) -> `PostgreSQLSink` (aggregations table). Quix copies the (small, normalised) value at the
  branch point; that is its branching cost and part of what is measured.

Why no group_by: Quix keys windows by the message key. Re-keying to sensor+metric would need `group_by`,
which always produces every record again to a repartition topic and consumes it back, only to co-locate
what the input already co-locates (it is partitioned by sensor id). A per-sensor window whose value
holds one aggregate per metric gives the same rows with no extra topic. One difference in when windows
close: Quix's default "key" closing strategy closes a window when a later event time arrives for the
same key, so here a sensor's windows close when any of its metrics moves past the window end (for the
several-readings shape all metrics share a timestamp, so nothing changes there). The last window of
every sensor stays open until later data arrives, and an open window is never written.

Library defaults are kept (commit every 5 s, at-least-once, RocksDB state with a changelog topic that
Quix creates, sink batches written at each checkpoint, schema_auto_update) except where the job forces
otherwise:
- auto_offset_reset="earliest": a new consumer group must read the topic from the start (Quix's default
  is "latest").
- include_metadata=False on the sinks: with metadata on, the sink writes its own `timestamp` column (the
  record's millisecond timestamp through `datetime.fromtimestamp`, i.e. in the process's local time zone)
  and silently overwrites a value field of that name. The rows must carry the reading's own timestamp,
  in UTC, to the microsecond, as our measurements table does.

Tables (created by the sink itself, columns added from the first row's Python types):
  readings:     _row_id SERIAL, sensor_id TEXT, metric TEXT, value DOUBLE PRECISION, timestamp TIMESTAMP (UTC)
  aggregations: _row_id SERIAL, sensor_id TEXT, metric TEXT, window_start TIMESTAMP, window_end TIMESTAMP,
                avg_value DOUBLE PRECISION, min_value DOUBLE PRECISION, max_value DOUBLE PRECISION, count BIGINT

Broker compatibility (see `prepare_topic`): Quix derives its changelog topic's config from the input
topic's `retention.ms` as the broker describes it. Kafka always describes it (default 7 days); the tansu
development broker describes only the configs a topic was created with, so on a topic created by
producing to it Quix fails with `KeyError: 'retention.ms'`. The harness creates the input topic with
`prepare_topic` before producing, and the peer checks at start-up (`check_input_topic`) and refuses to
run with a clear message rather than depend on that quirk silently.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import datetime, timedelta

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

METRIC_MAX_CHARS = 64
# Epoch seconds a PostgreSQL TIMESTAMP (and Python's datetime) can hold: up to the year 9999.
TIMESTAMP_MAX_S = 253402300800.0
# Kafka's own defaults for these three topic configs: 7 days, no size limit, delete old segments.
KAFKA_DEFAULT_TOPIC_CONFIG = {"retention.ms": "604800000", "retention.bytes": "-1", "cleanup.policy": "delete"}


# --- broker compatibility ---------------------------------------------------------------------------------

def prepare_topic(bootstrap: str, topic: str, partitions: int, timeout_s: float = 10.0) -> None:
    """Harness side: create the input topic with retention.ms, retention.bytes and cleanup.policy set
    explicitly (to Kafka's defaults) before anything is produced to it.

    Why: Quix's topic manager reads `retention.ms` from the broker's description of the input topic to
    configure its changelog topic. Kafka reports every config, defaults included; the tansu development
    broker reports only those given at creation, so a topic it auto-created reports none and Quix stops
    with KeyError. Setting them explicitly changes nothing on Kafka and makes tansu report them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    future = admin.create_topics([NewTopic(topic, partitions, 1, config=dict(KAFKA_DEFAULT_TOPIC_CONFIG))],
                                 operation_timeout=timeout_s)[topic]
    try:
        future.result(timeout_s)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
    problem = check_input_topic(bootstrap, topic, timeout_s)
    if problem:
        raise RuntimeError(problem)


def check_input_topic(bootstrap: str, topic: str, timeout_s: float = 10.0) -> str | None:
    """Peer side: None if Quix can use the input topic, else why not. Without this, a topic that
    does not exist is auto-created by Quix with one partition, and one whose broker omits retention.ms
    fails deep inside Quix with a bare KeyError."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic not in admin.list_topics(timeout=timeout_s).topics:
        return f"input topic {topic!r} does not exist: create it first (prepare_topic in pipeline.tools.bench.peer_quix)"
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource], request_timeout=timeout_s)[resource].result(timeout_s)
    if "retention.ms" not in configs:
        return (f"the broker does not report retention.ms for topic {topic!r}, which Quix needs to configure "
                f"its changelog topic; create the topic with explicit retention.ms, retention.bytes and "
                f"cleanup.policy (prepare_topic in pipeline.tools.bench.peer_quix)")
    return None


# --- decode and validate ----------------------------------------------------------------------------------

class Counters:
    """Counts for the exit line. One process, one thread: plain integers are enough."""

    def __init__(self):
        self.consumed = 0
        self.dropped_invalid = 0  # one per message refused whole, one per bad reading in a kept message


def finite_number(raw: object) -> float | None:
    # bool is an int subclass: true/false are not measurements.
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None
    try:
        number = float(raw)
    except OverflowError:  # an int beyond a double
        return None
    return number if math.isfinite(number) else None


def valid_metric(name: object) -> bool:
    return isinstance(name, str) and 0 < len(name) <= METRIC_MAX_CHARS


def payload_timestamp(payload: object) -> float | None:
    """Epoch seconds a TIMESTAMP column can hold, or None."""
    if not isinstance(payload, dict):
        return None
    seconds = finite_number(payload.get("timestamp"))
    return seconds if seconds is not None and 0 <= seconds < TIMESTAMP_MAX_S else None


def event_time_ms(value, headers, kafka_timestamp_ms: int, timestamp_type) -> int:
    """Quix timestamp extractor: windows run on the payload's time. An invalid payload keeps Kafka's
    timestamp; it is dropped before the window, so that time never moves a window."""
    seconds = payload_timestamp(value)
    return kafka_timestamp_ms if seconds is None else int(seconds * 1000)


def make_normaliser(counters: Counters):
    def normalise(payload, sensor_id, _timestamp, _headers) -> dict | None:
        """Payload -> {"timestamp": seconds, "readings": {metric: value}}, or None (dropped, counted)."""
        counters.consumed += 1
        seconds = payload_timestamp(payload)
        if seconds is None or not isinstance(sensor_id, str) or not sensor_id:
            counters.dropped_invalid += 1
            return None
        if "readings" in payload:
            raw = payload["readings"]
            if "metric" in payload or not isinstance(raw, dict) or not raw:
                counters.dropped_invalid += 1
                return None
            readings = {}
            for metric, value in raw.items():
                number = finite_number(value)
                if number is None or not valid_metric(metric):
                    counters.dropped_invalid += 1  # this reading only; the message's valid ones are kept
                else:
                    readings[metric] = number
            if not readings:
                return None
            return {"timestamp": seconds, "readings": readings}
        metric, number = payload.get("metric"), finite_number(payload.get("value"))
        if number is None or not valid_metric(metric):
            counters.dropped_invalid += 1
            return None
        return {"timestamp": seconds, "readings": {metric: number}}

    return normalise


def utc(seconds: float) -> datetime:
    """Naive UTC datetime (the sink maps datetime to TIMESTAMP), whatever the process's time zone."""
    return datetime(1970, 1, 1) + timedelta(seconds=seconds)


def reading_rows(record: dict, sensor_id: str, _timestamp, _headers) -> list[dict]:
    ts = utc(record["timestamp"])
    return [{"sensor_id": sensor_id, "metric": metric, "value": value, "timestamp": ts}
            for metric, value in record["readings"].items()]


# --- window aggregate: {metric: [sum, min, max, count]} per sensor and minute ------------------------------

def window_initial(record: dict) -> dict:
    return {metric: [value, value, value, 1] for metric, value in record["readings"].items()}


def window_add(aggregate: dict, record: dict) -> dict:
    for metric, value in record["readings"].items():
        current = aggregate.get(metric)
        if current is None:
            aggregate[metric] = [value, value, value, 1]
        else:
            current[0] += value
            if value < current[1]:
                current[1] = value
            if value > current[2]:
                current[2] = value
            current[3] += 1
    return aggregate


def window_rows(window: dict, sensor_id: str, _timestamp, _headers) -> list[dict]:
    start, end = utc(window["start"] / 1000), utc(window["end"] / 1000)
    return [{"sensor_id": sensor_id, "metric": metric, "window_start": start, "window_end": end,
             "avg_value": total / count, "min_value": low, "max_value": high, "count": count}
            for metric, (total, low, high, count) in window["value"].items()]


# --- the application --------------------------------------------------------------------------------------
# quixstreams and psycopg2 are imported where they are used, so a harness can import prepare_topic
# without them.

def counting_postgres_sink(dsn: str, table: str):
    """Quix's PostgreSQLSink, counting the rows of each batch it has written (for the exit line)."""
    from psycopg2.extensions import parse_dsn
    from quixstreams.sinks.community.postgresql import PostgreSQLSink

    class CountingPostgreSQLSink(PostgreSQLSink):
        rows_written = 0

        def write(self, batch):
            super().write(batch)
            self.rows_written += batch.size

    params = parse_dsn(dsn)
    return CountingPostgreSQLSink(host=params.pop("host", "127.0.0.1"), port=int(params.pop("port", 5432)),
                                  dbname=params.pop("dbname"), user=params.pop("user"),
                                  password=params.pop("password", ""), table_name=table,
                                  include_metadata=False, **params)


def build_app(args: argparse.Namespace, counters: Counters):
    from quixstreams import Application
    from quixstreams.models.serializers import SerializationError

    def on_consumer_error(exc, message, logger) -> bool:
        # Undecodable JSON (or a key that is not UTF-8): count it and skip it. Anything else (the
        # broker, the network) is not data and still stops the application, as Quix's default does.
        if isinstance(exc, SerializationError):
            counters.consumed += 1
            counters.dropped_invalid += 1
            return True
        logger.exception("consumer error: %s", exc)
        return False

    # A group join waits out the session timeout on the development broker (23 s with the default 45 s); on one
    # started empty for the level (--fresh-broker) the peer consumed one message and then nothing for 25 s.
    app = Application(broker_address=args.bootstrap, consumer_group=args.group, auto_offset_reset="earliest",
                      state_dir=args.state_dir, on_consumer_error=on_consumer_error,
                      consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 2000})
    topic = app.topic(args.topic, value_deserializer="json", key_deserializer="str",
                      timestamp_extractor=event_time_ms)
    readings_sink = counting_postgres_sink(args.postgres_dsn, args.readings_table)
    aggregations_sink = counting_postgres_sink(args.postgres_dsn, args.aggregations_table)

    sdf = app.dataframe(topic)
    valid = sdf.apply(make_normaliser(counters), metadata=True).filter(lambda record: record is not None)
    valid.apply(reading_rows, metadata=True, expand=True).sink(readings_sink)
    (valid.tumbling_window(timedelta(minutes=1))
        .reduce(window_add, window_initial)
        .final()
        .apply(window_rows, metadata=True, expand=True)
        .sink(aggregations_sink))
    return app, readings_sink, aggregations_sink


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.bench.peer_quix",
                                     description="The benchmark's Quix Streams peer: Kafka -> validate -> "
                                                 "1-minute windows -> PostgreSQL.")
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers, host:port")
    parser.add_argument("--topic", required=True, help="input topic (create it with prepare_topic)")
    parser.add_argument("--group", required=True, help="consumer group; a new one starts from the earliest offset")
    parser.add_argument("--postgres-dsn", required=True, help='libpq keywords, e.g. "host=... port=... user=... dbname=..."')
    parser.add_argument("--readings-table", required=True)
    parser.add_argument("--aggregations-table", required=True)
    parser.add_argument("--state-dir", required=True, help="Quix's RocksDB state directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = check_input_topic(args.bootstrap, args.topic)
    if problem:
        print(f"peer_quix: {problem}", file=sys.stderr)
        return 2
    counters = Counters()
    app, readings_sink, aggregations_sink = build_app(args, counters)
    # Returns after SIGTERM/SIGINT, once Quix has flushed the sinks and committed the last checkpoint;
    # a failure raises instead, so the line below is printed only after a clean stop.
    app.run()
    print(json.dumps({"consumed": counters.consumed, "dropped_invalid": counters.dropped_invalid,
                      "readings_written": readings_sink.rows_written,
                      "aggregations_written": aggregations_sink.rows_written}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
