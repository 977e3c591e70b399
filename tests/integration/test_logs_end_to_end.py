"""Application logs end to end: MQTTHandler -> MQTT -> Kafka -> validation -> `logs`, the logs stream and
per-window counts in `measurements`; malformed records to the dead-letter topic; the daemon's own warnings."""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta, timezone

from pipeline.logship import MQTTHandler
from tests.integration.clients import Publisher, RunningPipeline, read_topic, wait_for


def log_settings(env, **logs):
    """Settings whose logs root (l<id>) is unique to this test and subscribed; small count and aggregation windows."""
    root = f"l{env.run_id}"
    return env.settings(mqtt={"topics": [f"{env.root}/#", f"{root}/#"]},
                        logs={"topic_root": root, "count_window_s": 2, "count_grace_s": 0.5, **logs},
                        aggregation={"periods": ["2s"], "grace_s": 0})


def attach(env, app: str, root: str):
    handler = MQTTHandler(app, "127.0.0.1", topic_root=root, close_timeout=15)  # generous on a busy machine
    logger = logging.getLogger(f"test.{env.run_id}.{app}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    return logger, handler


def detach(logger, handler):
    logger.removeHandler(handler)
    handler.close()


def counts(env, app: str) -> dict[str, float]:
    return dict(env.query("SELECT metric, sum(value) FROM measurements WHERE sensor_id = %s GROUP BY metric",
                          (f"app:{app}",)))


def test_handler_records_reach_logs_table_stream_and_counts_and_bad_records_are_dead_lettered(env):
    settings = env.migrate(log_settings(env))
    root = settings.config.logs.topic_root
    metrics = env.metrics()
    started = time.time()
    bad = [
        (f"{root}/billing", json.dumps({"level": "LOUD", "message": "m"}), "log_level_invalid"),
        (f"{root}/billing", json.dumps({"level": "INFO", "message": "x" * 8193}), "log_message_too_long"),
        (f"{root}/billing", json.dumps({"level": "INFO", "message": "m", "extra": [1]}), "log_extra_invalid"),
        (f"{root}/billing", json.dumps({"level": "INFO", "message": "m", "colour": "red"}), "log_unknown_field"),
        (f"{root}/billing", json.dumps({"message": "m"}), "log_missing_field"),
        (f"{root}/billing", "{not json", "invalid_json"),
        (f"{root}/billing/sub", json.dumps({"level": "INFO", "message": "m"}), "log_topic_invalid"),
        (f"{root}/bad app", json.dumps({"level": "INFO", "message": "m"}), "log_app_invalid"),
        # Once stored-failing writes isolated by splitting batches; now refused by name before any write.
        (f"{root}/billing", '{"level": "INFO", "message": "m", "extra": ' + '{"a":' * 300 + "1" + "}" * 301,
         "json_too_deep"),
        (f"{root}/billing", '{"level": "INFO", "message": "m", "extra": ' + '{"a":' * 9 + "1" + "}" * 10,
         "log_extra_too_deep"),
        (f"{root}/billing", json.dumps({"level": "INFO", "message": "m", "extra": {"k": "x" * 8200}}),
         "log_extra_too_large"),
    ]
    with RunningPipeline(settings, metrics):
        logger, handler = attach(env, "billing", root)
        try:
            logger.debug("cache warm")
            logger.info("order %d placed", 1)
            logger.info("order %d placed", 2)
            logger.warning("slow query", extra={"ms": 1200})
            for i in range(3):
                logger.error("payment failed", extra={"order_id": i})
            try:
                1 / 0
            except ZeroDivisionError:
                logger.exception("crash in handler")
            logger.critical("out of disk")
        finally:
            detach(logger, handler)
        assert (handler.sent, handler.dropped, handler.unconfirmed) == (9, 0, 0)
        pub = Publisher()
        pub.publish_all([(t, p) for t, p, _ in bad])
        pub.close()
        wait_for(lambda: env.query("SELECT count(*) FROM logs")[0][0] == 9, what="9 log rows")
        dead = read_topic(settings.config.kafka.topics.dead_letter, expected=len(bad))
        wait_for(lambda: env.redis.xlen(f"t{env.run_id}:logs") == 9, what="9 log stream entries")
        want = {"log_debug": 1, "log_info": 2, "log_warning": 1, "log_error": 4, "log_critical": 1}
        wait_for(lambda: counts(env, "billing") == want, what="per-level counts", timeout=30)
        # Windows after the last record get zeros: the error rate is seen to fall back.
        wait_for(lambda: env.query("SELECT count(*) FROM measurements WHERE sensor_id = 'app:billing' AND metric = "
                                   "'log_error' AND value = 0 AND timestamp > (SELECT max(timestamp) FROM logs)")[0][0],
                 what="a zero error count after the records", timeout=30)
        latest = wait_for(lambda: env.redis.hgetall(f"t{env.run_id}:latest:app:billing"), what="latest counts in Redis")
        # Counts are readings like any other: they get aggregation windows too (one count per 2 s window here).
        wait_for(lambda: env.query("SELECT sum(max_value) FROM aggregations WHERE sensor_id = 'app:billing' AND "
                                   "metric = 'log_error'")[0][0] == 4, what="aggregations of the error counts")

    rows = env.query("SELECT level, message, logger, extra, timestamp, received_at, kafka_offset FROM logs ORDER BY timestamp")
    assert [(r[0], r[1].split("\n")[0], r[3]) for r in rows] == [
        ("DEBUG", "cache warm", {}), ("INFO", "order 1 placed", {}), ("INFO", "order 2 placed", {}),
        ("WARNING", "slow query", {"ms": 1200}), ("ERROR", "payment failed", {"order_id": 0}),
        ("ERROR", "payment failed", {"order_id": 1}), ("ERROR", "payment failed", {"order_id": 2}),
        ("ERROR", "crash in handler", {}), ("CRITICAL", "out of disk", {})]
    assert "ZeroDivisionError: division by zero" in rows[7][1]
    assert all(r[2] == f"test.{env.run_id}.billing" and r[6] is not None for r in rows)
    t0 = datetime_utc(started)
    # received_at is the Kafka message's timestamp, whole milliseconds: a record sent and received within the
    # same millisecond shows a receive time up to 1 ms before its event time.
    assert all(abs((r[4] - t0).total_seconds()) < 60 and r[5] >= r[4] - timedelta(milliseconds=1) for r in rows)

    entries = [e for _, e in env.redis.xrange(f"t{env.run_id}:logs")]
    assert sorted((e["level"], e["message"].split("\n")[0]) for e in entries) == sorted(
        (r[0], r[1].split("\n")[0]) for r in rows)
    assert all(e["app"] == "billing" and json.loads(e["extra"]) is not None for e in entries)
    assert "log_error" in latest

    assert env.query("SELECT sensor_id, type FROM sensors") == [("app:billing", "app")]
    got = sorted((dict(m.headers())["reason"].decode(), m.value()) for m in dead)
    assert got == sorted((reason, payload.encode()) for _, payload, reason in bad)
    assert {dict(m.headers())["stage"] for m in dead} == {b"decode", b"validate_log"}
    assert metrics.registry.get_sample_value("pipeline_sink_records_written_total", {"sink": "logs"}) == 9


def datetime_utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc).replace(tzinfo=None)


def test_error_burst_opens_an_alert_that_resolves_when_the_rate_falls_back(env):
    settings = env.migrate(log_settings(env))
    root = settings.config.logs.topic_root
    warning_above = settings.config.thresholds["log_error"].warning.max
    critical_above = settings.config.thresholds["log_error"].critical.max
    burst = 3 * int(warning_above) + 1  # above the warning bound even if split across two windows
    assert burst <= critical_above
    with RunningPipeline(settings, env.metrics()):
        logger, handler = attach(env, "burst", root)
        try:
            for i in range(burst):
                logger.error("upstream timeout %d", i)
        finally:
            detach(logger, handler)
        alerts = wait_for(lambda: env.query("SELECT severity, message FROM alerts WHERE sensor_id = 'app:burst' AND "
                                            "type = 'threshold' AND metric = 'log_error'"), what="an alert", timeout=30)
        # Windows after the burst count 0 errors: after alerts.clear_readings of them the alert resolves.
        wait_for(lambda: env.query("SELECT resolved FROM alerts WHERE sensor_id = 'app:burst'") == [(True,)],
                 what="the alert resolved", timeout=30)
    assert [a[0] for a in alerts] == ["warning"] and "log_error" in alerts[0][1]
    assert env.query("SELECT count(*) FROM alerts") == [(1,)]  # one alert, not one per window


def test_daemon_ships_its_own_warnings_but_never_records_about_shipping(env):
    app = f"rp-{env.run_id}"
    settings = env.migrate(log_settings(env, ship_own=True, ship_app=app))
    source = logging.getLogger(f"pipeline.test_ship_{env.run_id}")
    source.setLevel(logging.DEBUG)
    with RunningPipeline(settings, env.metrics()) as p:
        handler = p.log_handler
        assert handler in logging.getLogger().handlers and handler.level == logging.WARNING
        source.warning("event=test_warning n=%d", 1)
        source.info("event=below_ship_level")
        logging.getLogger("pipeline.logship").warning("event=about_shipping")
        logging.getLogger("paho.client").error("event=paho_trouble")
        source.error("event=sentinel")  # same app, same partition: it arrives after everything above
        wait_for(lambda: env.query("SELECT 1 FROM logs WHERE app = %s AND message = 'event=sentinel'", (app,)),
                 what="the sentinel record")
    messages = {r[0] for r in env.query("SELECT message FROM logs WHERE app = %s", (app,))}
    assert {"event=test_warning n=1", "event=sentinel"} <= messages
    assert not messages & {"event=below_ship_level", "event=about_shipping", "event=paho_trouble"}
    assert handler not in logging.getLogger().handlers


def test_a_log_record_replayed_through_kafka_is_stored_once(env):
    """The same raw-topic records produced twice (a replay: new offsets, the bridge's receive stamps kept), and a
    shipper's record sent again with its id (a new receive stamp): one row each; a distinct message stays distinct."""
    from confluent_kafka import Producer

    from pipeline.ingest.identity import MQTT_TOPIC_HEADER, RECEIVED_US_HEADER

    settings = env.migrate(log_settings(env))
    root, raw_topic = settings.config.logs.topic_root, settings.config.kafka.topics.raw
    producer = Producer({"bootstrap.servers": settings.config.kafka.bootstrap_servers})
    stamp = int(time.time() * 1_000_000) - 5_000_000

    def send(body: dict, received_us: int) -> None:
        producer.produce(raw_topic, json.dumps(body).encode(), key=b"billing",
                         headers=[(MQTT_TOPIC_HEADER, f"{root}/billing".encode()), (RECEIVED_US_HEADER, str(received_us).encode())])

    plain = {"level": "ERROR", "message": "db down"}  # no timestamp, no id: its receive stamp is its identity
    shipped = {"level": "WARNING", "message": "slow", "timestamp": stamp / 1e6, "id": "4be1f0c2:7"}
    with RunningPipeline(settings, env.metrics()):
        for _ in range(2):  # the second round is the replay
            send(plain, stamp)
            send(plain, stamp + 1)  # the same text, another message: a row of its own
            producer.flush(10)
        send(shipped, stamp + 2)
        send(shipped, stamp + 3_000_000)  # sent again by the shipper: received again, later
        producer.flush(10)
        wait_for(lambda: env.query("SELECT count(*) FROM logs")[0][0] >= 3, what="the log records")
        time.sleep(3)  # a duplicate would arrive after the last record
    rows = env.query("SELECT level, message, received_at FROM logs ORDER BY received_at")
    assert [(level, message) for level, message, _ in rows] == [("ERROR", "db down"), ("ERROR", "db down"), ("WARNING", "slow")]
    assert env.query("SELECT count(DISTINCT record_key) FROM logs") == [(3,)]
