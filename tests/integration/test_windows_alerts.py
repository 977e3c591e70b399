"""Scripted sequences over MQTT through the real services: exact `aggregations` rows (in-order, out-of-order,
duplicate, late and too-late readings) and exact alert rows (opened, escalated, resolved, offline, no flapping)."""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.integration.clients import Publisher, RunningPipeline, read_topic, wait_for


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc).replace(tzinfo=None)


def aligned_past(step: int = 60, back: int = 120) -> int:
    """An event time aligned to `step`, a little in the past (inside validation's limits)."""
    return (int(time.time()) // step) * step - back


def reading(root: str, sensor: str, metric: str, value: float, ts: float | None = None) -> tuple[str, str]:
    body = {"metric": metric, "value": value}
    if ts is not None:
        body["timestamp"] = ts
    return f"{root}/{sensor}", json.dumps(body)


def rows(env, sql: str, params=()):
    return env.query(sql, params)


WINDOWS = dict(aggregation={"periods": ["10s", "1m"], "grace_s": 2, "max_lateness_s": 30, "idle_close_s": 600},
               detection={"enabled": False}, processing={"interval_s": 0.5})
AGG_SQL = ("SELECT period, timestamp, avg_value, min_value, max_value, count FROM aggregations "
           "WHERE sensor_id = 's1' ORDER BY period, timestamp")


def test_window_rows_are_exact_under_disorder_duplicates_late_data_and_too_late_data(env):
    settings = env.migrate(env.settings(**WINDOWS))
    metrics = env.metrics()
    root, t0 = env.root, aligned_past()
    pub = Publisher()
    with RunningPipeline(settings, metrics):
        # Window [t0, t0+10): out of order and one duplicate (an MQTT resend); [t0+10, t0+20): one reading;
        # then t0+25 moves the watermark to t0+23, past both ends.
        pub.publish_all([reading(root, "s1", "temperature", v, t0 + dt) for dt, v in
                         ((1, 20.0), (7, 24.0), (3, 22.0), (1, 20.0), (12, 30.0), (25, 10.0))])
        wait_for(lambda: len(rows(env, AGG_SQL)) == 2, what="two closed 10s windows")
        assert rows(env, AGG_SQL) == [("10s", utc(t0), 22.0, 20.0, 24.0, 3), ("10s", utc(t0 + 10), 30.0, 30.0, 30.0, 1)]
        assert env.query("SELECT count(*) FROM measurements")[0][0] == 5  # the duplicate was not stored

        # Open windows' running values, for the dashboard (newest window per period), published by their own
        # thread within a second of the readings.
        key = f"t{env.run_id}:partial:s1"
        wait_for(lambda: json.loads(env.redis.hget(key, "temperature:1m") or "{}").get("count") == 5,
                 what="the partials of the five readings")
        partial = env.redis.hgetall(key)
        assert json.loads(partial["temperature:1m"]) == {"start": t0, "end": t0 + 60, "count": 5, "avg": 21.2,
                                                         "min": 10.0, "max": 30.0}
        assert json.loads(partial["temperature:10s"])["start"] == t0 + 20

        # A late reading for the closed window, within max_lateness_s: the row is recomputed from all readings.
        # One older than the watermark minus max_lateness_s (t0+23-30 = t0-7): dead-lettered as `late`.
        pub.publish_all([reading(root, "s1", "temperature", 26.0, t0 + 5), reading(root, "s1", "temperature", 99.0, t0 - 20)])
        wait_for(lambda: rows(env, AGG_SQL)[0][5] == 4, what="the corrected window")
        [late] = read_topic(settings.config.kafka.topics.dead_letter, expected=1)
        # Then t0+63 closes the 1m window and the 10s window [t0+20, t0+30).
        pub.publish_all([reading(root, "s1", "temperature", 40.0, t0 + 63)])
        wait_for(lambda: len(rows(env, AGG_SQL)) == 4, what="the 1m window")
    pub.close()

    assert rows(env, AGG_SQL) == [
        ("10s", utc(t0), 23.0, 20.0, 26.0, 4),
        ("10s", utc(t0 + 10), 30.0, 30.0, 30.0, 1),
        ("10s", utc(t0 + 20), 10.0, 10.0, 10.0, 1),
        ("1m", utc(t0), 22.0, 10.0, 30.0, 6),
    ]
    assert dict(late.headers())["reason"] == b"late" and json.loads(late.value())["value"] == 99.0
    assert env.query("SELECT count(*) FROM measurements WHERE value = 99")[0][0] == 0
    # Still pending (t0+63's windows), to be closed by a later watermark or after a restart.
    assert sorted(env.query("SELECT period, window_start FROM aggregation_pending")) == [("10s", utc(t0 + 60)), ("1m", utc(t0 + 60))]

    stream = [e for _, e in env.redis.xrange(f"t{env.run_id}:aggregations")]
    assert [(e["period"], int(e["start"]) - t0, int(e["count"])) for e in stream] == [
        ("10s", 0, 3), ("10s", 10, 1), ("10s", 0, 4), ("10s", 20, 1), ("1m", 0, 6)]
    assert stream[2]["id"] == f"s1|temperature|10s|{t0}" and float(stream[2]["avg"]) == 23.0

    get = metrics.registry.get_sample_value
    assert get("pipeline_invalid_records_total", {"stage": "lateness", "reason": "late"}) == 1
    assert get("pipeline_dead_letters_total", {"kind": "invalid", "reason": "late"}) == 1
    assert get("pipeline_aggregation_late_corrections_total", {"period": "10s"}) == 1
    assert get("pipeline_aggregation_windows_closed_total", {"period": "10s"}) == 4

    # Replay: a new consumer group reads the raw topic from the start. The same readings: the same rows.
    before = rows(env, "SELECT id, period, timestamp, avg_value, min_value, max_value, count FROM aggregations ORDER BY id")
    replay = env.metrics()
    with RunningPipeline(env.settings(**WINDOWS, kafka={"consumer_group": f"t{env.run_id}-replay"}), replay):
        wait_for(lambda: replay.registry.get_sample_value("pipeline_kafka_messages_consumed_total") == 9, what="the replay")
        wait_for(lambda: replay.registry.get_sample_value("pipeline_readings_deduplicated_total", {"reason": "redelivery"}) == 8,
                 what="the replayed readings (the duplicate too) skipped by the PostgreSQL sink as redeliveries")
        assert not replay.registry.get_sample_value("pipeline_sink_records_written_total", {"sink": "postgres"})
    assert rows(env, "SELECT id, period, timestamp, avg_value, min_value, max_value, count FROM aggregations ORDER BY id") == before
    assert env.query("SELECT count(*) FROM measurements")[0][0] == 7


def test_windows_closing_for_many_sensors_and_rolled_up_periods_equal_their_sql_aggregate(env):
    """60 sensors close a 10s window together (one pass over its time range), and 1m rows are rolled up
    from the 10s rows: each row equals the aggregate of its raw readings."""
    settings = env.migrate(env.settings(**WINDOWS))
    root, t0 = env.root, aligned_past()
    sensors = [f"m{i:02d}" for i in range(60)]
    pub = Publisher()
    with RunningPipeline(settings, env.metrics()):
        pub.publish_all([reading(root, s, "temperature", round(10 + i * 0.37 + k * 1.3, 2), t0 + k * 7 + i % 5)
                         for k in range(8) for i, s in enumerate(sensors)])  # t0 .. t0+53: 10s windows and one 1m
        pub.publish_all([reading(root, s, "temperature", 0.0, t0 + 65) for s in sensors])  # every watermark past t0+60
        wait_for(lambda: rows(env, "SELECT count(*) FROM aggregations WHERE period = '1m'")[0][0] == 60,
                 what="the 1m rows of all 60 sensors")
    pub.close()
    stored = rows(env, "SELECT sensor_id, period, timestamp, round(avg_value::numeric, 9), min_value, max_value, count "
                       "FROM aggregations ORDER BY 1, 2, 3")
    expected = rows(env, """
        SELECT sensor_id, p.period, to_timestamp(floor(extract(epoch FROM timestamp) / p.s) * p.s) AT TIME ZONE 'UTC' AS w,
               round(avg(value)::numeric, 9), min(value), max(value), count(*)
          FROM measurements, (VALUES ('10s', 10), ('1m', 60)) AS p (period, s)
         WHERE timestamp < %s GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""", (utc(t0 + 60),))
    assert len(expected) > 60 * 5 and stored == expected


class Hook:
    """A local webhook endpoint: the first `fail_first` requests get 503, the rest are recorded."""

    def __init__(self, fail_first: int = 1):
        self.bodies: list[dict] = []
        self.fail_left = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if outer.fail_left > 0:
                    outer.fail_left -= 1
                    self.send_response(503)
                else:
                    outer.bodies.append(body)
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/alerts"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.close()


ALERT_SQL = ("SELECT id, sensor_id, metric, type, severity, timestamp, resolved, resolved_at FROM alerts "
             "WHERE sensor_id = %s ORDER BY id")


def alert_config(url: str) -> dict:
    # `boiler_temp` has only a threshold (no rate/outlier/stuck settings): the rows below are exactly its story.
    return dict(thresholds={"boiler_temp": {"warning": {"max": 40}, "critical": {"max": 60}, "deadband": 0.5}},
                detection={"offline_after_s": 0, "offline_severity": "critical", "sensors": {"s-off": {"offline_after_s": 2}}},
                # renotify_s 0: every transition is announced (the default holds back a reopening within the hour)
                alerts={"clear_readings": 3, "webhook": {"url": url, "max_elapsed_s": 10}, "notifications": {"renotify_s": 0}},
                processing={"interval_s": 0.5}, aggregation={"enabled": False})


def test_alerts_open_escalate_in_place_resolve_with_hysteresis_and_do_not_flap(env, hook):
    settings = env.migrate(env.settings(**alert_config(hook.url)))
    metrics = env.metrics()
    root, t0 = env.root, aligned_past()
    values = [25, 41, 39.8, 40.3, 61, 39, 39.7, 39, 38, 37,  # open, hold, escalate, clear streak broken, 3 clear
              40.2, 39.8, 40.3, 39.9, 40.1, 39.6, 40.4, 39.7]  # a new episode oscillating around the bound
    pub = Publisher()
    with RunningPipeline(settings, metrics):
        pub.publish_all([reading(root, "s1", "boiler_temp", v, t0 + i) for i, v in enumerate(values)])
        wait_for(lambda: env.query("SELECT count(*) FROM alert_events")[0][0] == 4, what="four alert events")
        # Offline: one reading, silence past 2 s (the evaluator's timer), then a reading again.
        pub.publish_all([reading(root, "s-off", "lux", 300)])
        wait_for(lambda: rows(env, ALERT_SQL, ("s-off",)), timeout=15, what="the offline alert")
        time.sleep(1.5)  # several more ticks while offline: still one alert
        pub.publish_all([reading(root, "s-off", "lux", 310)])
        wait_for(lambda: rows(env, ALERT_SQL, ("s-off",))[0][6], what="the offline alert resolved")
        wait_for(lambda: len(hook.bodies) == 6, what="six webhook deliveries")
    pub.close()

    got = rows(env, ALERT_SQL, ("s1",))
    assert [r[1:] for r in got] == [
        ("s1", "boiler_temp", "threshold", "critical", utc(t0 + 1), True, utc(t0 + 9)),
        ("s1", "boiler_temp", "threshold", "warning", utc(t0 + 10), False, None),
    ]
    first, second = got[0][0], got[1][0]
    messages = dict(env.query("SELECT id, message FROM alerts"))
    assert messages[first] == (f"Escalated from warning to critical: boiler_temp of sensor s1 is 61, above the critical "
                               f"maximum 60, at {utc(t0 + 4):%Y-%m-%d %H:%M:%S} UTC.")
    events = env.query("SELECT alert_id, event, severity, timestamp FROM alert_events WHERE alert_id IN (%s, %s) ORDER BY id",
                       (first, second))
    assert events == [(first, "opened", "warning", utc(t0 + 1)), (first, "escalated", "critical", utc(t0 + 4)),
                      (first, "resolved", "critical", utc(t0 + 9)), (second, "opened", "warning", utc(t0 + 10))]

    [off] = rows(env, ALERT_SQL, ("s-off",))
    assert off[2:5] == (None, "offline", "critical") and off[6] is True and off[7] >= off[5]
    off_msg = env.query("SELECT message FROM alerts WHERE id = %s", (off[0],))[0][0]
    assert off_msg.startswith("Critical: sensor s-off sent no reading for ") and "(limit 2 s)" in off_msg

    stream = [e for _, e in env.redis.xrange(f"t{env.run_id}:alerts")]
    assert [(e["sensor_id"], e["type"], e["event"], e["severity"]) for e in stream] == [
        ("s1", "threshold", "opened", "warning"), ("s1", "threshold", "escalated", "critical"),
        ("s1", "threshold", "resolved", "critical"), ("s1", "threshold", "opened", "warning"),
        ("s-off", "offline", "opened", "critical"), ("s-off", "offline", "resolved", "critical")]
    assert [(b["alert_id"], b["event"]) for b in hook.bodies] == [(first, "opened"), (first, "escalated"), (first, "resolved"),
                                                                  (second, "opened"), (off[0], "opened"), (off[0], "resolved")]
    get = metrics.registry.get_sample_value
    assert get("pipeline_alert_webhook_deliveries_total", {"result": "delivered"}) == 6
    assert get("pipeline_retries_total", {"operation": "alert_webhook"}) == 1  # the 503, retried
    assert get("pipeline_alert_transitions_total", {"type": "threshold", "event": "escalated", "severity": "critical"}) == 1


def test_thresholds_edited_in_the_file_apply_live_and_an_invalid_file_is_refused(env, tmp_path):
    import yaml

    from pipeline.config import load

    extra = dict(thresholds={"boiler_temp": {"warning": {"max": 40}}}, detection={"offline_after_s": 0},
                 alerts={"clear_readings": 3}, reload={"watch_interval_s": 0.2}, aggregation={"enabled": False})
    path = env.write_config(tmp_path / "config.yaml", **extra)
    settings = env.migrate(load(path, env={}))
    metrics = env.metrics()
    root, t0 = env.root, time.time() - 30
    pub = Publisher()
    with RunningPipeline(settings, metrics) as p:
        pub.publish_all([reading(root, "s1", "boiler_temp", 35, t0)])
        wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] == 1, what="the first reading")
        assert env.query("SELECT count(*) FROM alerts")[0][0] == 0  # 35 is fine under max 40

        tree = yaml.safe_load(path.read_text())
        tree["thresholds"]["boiler_temp"]["warning"]["max"] = 30
        tree["postgres"]["pool_max"] = 8  # cannot change live: reported as needing a restart
        path.write_text(yaml.safe_dump(tree))
        wait_for(lambda: p.config.current.config.thresholds["boiler_temp"].warning.max == 30, what="the reload")
        assert p.config.restart_required == ("postgres.pool_max",)
        pub.publish_all([reading(root, "s1", "boiler_temp", 36, t0 + 1)])
        wait_for(lambda: env.query("SELECT message FROM alerts"), what="an alert under the new threshold")
        [(message,)] = env.query("SELECT message FROM alerts")
        assert "boiler_temp of sensor s1 is 36, above the warning maximum 30" in message

        tree["thresholds"]["boiler_temp"]["warning"]["max"] = "cold"
        path.write_text(yaml.safe_dump(tree))
        wait_for(lambda: p.config.last_reload_error, what="the refusal")
        assert p.config.last_reload_error.startswith("thresholds.boiler_temp.warning.max: Expected `float | null`")
        assert metrics.registry.get_sample_value("pipeline_config_reload_ok") == 0
        assert p.config.current.config.thresholds["boiler_temp"].warning.max == 30  # the old config stays
        pub.publish_all([reading(root, "s1", "boiler_temp", 20, t0 + 2 + i) for i in range(3)])
        wait_for(lambda: env.query("SELECT resolved FROM alerts")[0][0], what="resolution under the kept config")
    pub.close()
    assert env.query("SELECT count(*) FROM alerts")[0][0] == 1
