"""The log sink and the log counter against the real PostgreSQL and Redis: redelivery inserts nothing twice,
counts are exact, corrected by late records, unchanged by a restart, and retention deletes old logs."""
from __future__ import annotations

import time

from pipeline.app.build import alert_sections
from pipeline.records import LogRecord, RawMessage, Reading
from pipeline.runtime.batch import Batch
from pipeline.operators.logcounts.runner import LogCounter
from pipeline.operators.alerts.runner import AlertRunner
from pipeline.sinks.log_store import LogSink
from pipeline.clients.postgres import utc_naive
from pipeline.sinks.postgres import PostgresSink

W = 10


def make_records(items, first_offset=0):
    now = time.time()
    out = []
    for i, (app, level, ts) in enumerate(items):
        src = RawMessage(f"logs/{app}", b"{}", now, app.encode(), "raw", 1, first_offset + i)
        out.append(LogRecord(app, level, f"{level.lower()} {i}", "svc.part", {"i": i}, ts, now, src))
    return out


def sinks(env, settings):
    cfg, secrets = settings.config, settings.secrets
    common = dict(retry=cfg.retry, metrics=env.metrics(), queue_max_batches=4)
    logs = LogSink(cfg.postgres, secrets.postgres_password, cfg.redis, secrets.redis_password, settings=cfg.sinks.logs,
                   **common)
    pg = PostgresSink(cfg.postgres, secrets.postgres_password, settings=cfg.sinks.postgres, **common)
    logs.start()
    pg.start()
    return logs, pg


def counter(settings, pg, emitted, metrics):
    """A LogCounter whose hand-over writes through the real PostgreSQL sink, synchronously."""
    def emit(readings, durable):
        emitted.append((sorted((r.sensor_id, r.metric, r.value, r.ts) for r in readings), durable))
        pg.write(readings)
        return Batch(readings, [], {}, 0)  # no sinks left to wait for: done

    c = LogCounter(settings.config.postgres, settings.secrets.postgres_password, settings.config.logs,
                   settings.config.retry, metrics, emit, pg.correct)
    c.start()
    return c


def test_redelivered_log_batch_is_stored_once(env):
    settings = env.migrate()
    logs, pg = sinks(env, settings)
    try:
        records = make_records([("a", "ERROR", time.time() - 5), ("a", "INFO", time.time() - 4)])
        logs.write(records)
        logs.write(records)  # the same Kafka messages again, as after a crash before the offset commit
        later = make_records([("a", "ERROR", time.time() - 3)], first_offset=2)
        logs.write(later)
    finally:
        logs.close()
        pg.close()
    rows = env.query("SELECT app, level, message, logger, extra, kafka_partition, kafka_offset FROM logs ORDER BY kafka_offset")
    assert rows == [("a", "ERROR", "error 0", "svc.part", {"i": 0}, 1, 0), ("a", "INFO", "info 1", "svc.part", {"i": 1}, 1, 1),
                    ("a", "ERROR", "error 0", "svc.part", {"i": 0}, 1, 2)]
    entries = env.redis.xrange(f"t{env.run_id}:logs")
    assert len(entries) == 5  # the stream is at-least-once: a duplicate carries the same id
    assert len({e["id"] for _, e in entries}) == 3


def test_counts_are_exact_corrected_by_late_records_and_unchanged_by_a_restart(env):
    settings = env.migrate(env.settings(logs={"count_window_s": W, "count_grace_s": 0, "count_active_s": 60}))
    logs, pg = sinks(env, settings)
    metrics = env.metrics()
    now = time.time()
    w0 = (now - 35) // W * W  # a closed window inside the counter's lookback
    try:
        logs.write(make_records([("a", "ERROR", w0 + 1), ("a", "ERROR", w0 + 2), ("a", "INFO", w0 + 3),
                                 ("b", "WARNING", w0 + 4)]))
        emitted: list = []
        c = counter(settings, pg, emitted, metrics)
        c.tick()
        assert emitted and all(not durable for _, durable in emitted)

        def window(start):
            return dict(((s, m), v) for s, m, v in env.query(
                "SELECT sensor_id, metric, value FROM measurements WHERE timestamp = %s", (utc_naive(start),)))

        first = window(w0)
        assert first == {("app:a", "log_debug"): 0, ("app:a", "log_info"): 1, ("app:a", "log_warning"): 0,
                         ("app:a", "log_error"): 2, ("app:a", "log_critical"): 0, ("app:b", "log_debug"): 0,
                         ("app:b", "log_info"): 0, ("app:b", "log_warning"): 1, ("app:b", "log_error"): 0,
                         ("app:b", "log_critical"): 0}
        assert window(w0 + W)[("app:a", "log_error")] == 0  # zeros after the records: a rate that falls back
        assert env.query("SELECT sensor_id, type, location FROM sensors ORDER BY 1") == [("app:a", "app", None),
                                                                                           ("app:b", "app", None)]
        emitted.clear()
        c.tick()
        assert emitted == []  # nothing new closed, nothing changed

        late = make_records([("a", "ERROR", w0 + 9)], first_offset=10)
        logs.write(late)
        c.mark(late)
        c.tick()
        assert emitted == [([("app:a", "log_error", 3.0, w0)], True)]  # a correction, already stored
        assert window(w0)[("app:a", "log_error")] == 3
        c.close()

        # A restart counts its lookback again: stored counts are unchanged, so nothing is handed on twice.
        emitted.clear()
        again = counter(settings, pg, emitted, metrics)
        again.tick()
        assert emitted == []
        # A window whose counts were lost (crash between the records and their count) is counted after the restart.
        env.query("DELETE FROM measurements WHERE sensor_id = 'app:a' AND timestamp = %s RETURNING 1", (utc_naive(w0),))
        emitted.clear()
        third = counter(settings, pg, emitted, metrics)
        third.tick()
        assert len(emitted) == 1  # every window due in one hand-over
        assert [(r, durable) for rows, durable in emitted for r in rows if r[3] == w0] == [
            (("app:a", "log_critical", 0.0, w0), False), (("app:a", "log_debug", 0.0, w0), False),
            (("app:a", "log_error", 3.0, w0), False), (("app:a", "log_info", 1.0, w0), False),
            (("app:a", "log_warning", 0.0, w0), False)]
        assert window(w0) == {**first, ("app:a", "log_error"): 3}
        again.close()
        third.close()
    finally:
        logs.close()
        pg.close()
    assert metrics.registry.get_sample_value("pipeline_log_count_readings_total") > 0


def test_log_count_sensors_never_go_offline(env):
    # An app that stops logging is quiet, not offline; a silent device is offline.
    settings = env.migrate(env.settings(detection={"offline_after_s": 1}))
    env.query("INSERT INTO sensors (sensor_id, type) VALUES ('app:quiet', 'app'), ('dev-1', 'sensor') RETURNING 1")
    cfg = settings.config
    now = [time.time()]
    sink = AlertRunner(alert_sections(cfg), settings.secrets.postgres_password, settings.secrets.redis_password, env.metrics(),
                       clock=lambda: now[0])
    sink.start()
    try:
        sink.take(Batch([Reading("app:busy", "app", None, "log_error", 0.0, now[0], now[0])], [], {}, 1))
        now[0] += 5
        sink.tick()
    finally:
        sink.close()
    assert env.query("SELECT sensor_id FROM alerts WHERE type = 'offline'") == [("dev-1",)]
