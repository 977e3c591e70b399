"""The alert evaluator's state against the real PostgreSQL and Redis (no Kafka): open alerts survive a restart,
an alert already open in the database is adopted not doubled, one resolved by an operator is let go."""
from __future__ import annotations

import time

import pytest

from pipeline.app.build import alert_sections
from pipeline.records import Reading
from pipeline.runtime.batch import Batch
from pipeline.operators.alerts.runner import AlertRunner

T0 = time.time() - 600
THRESHOLDS = {"boiler_temp": {"warning": {"max": 40}, "critical": {"max": 60}, "deadband": 0.5}}


def make_sink(env, settings) -> AlertRunner:
    cfg = settings.config
    sink = AlertRunner(alert_sections(cfg), settings.secrets.postgres_password, settings.secrets.redis_password, env.metrics())
    sink.start()
    return sink


def feed(sink: AlertRunner, *values_at: tuple[float, float], sensor: str = "s1") -> list:
    readings = [Reading(sensor, "boiler", None, "boiler_temp", v, T0 + dt, time.time()) for dt, v in values_at]
    transitions = list(sink.take(Batch(readings, [], {}, 1)))
    sink.write(transitions)
    sink.durable(transitions)
    return [(t.event, t.severity) for t in transitions]


@pytest.fixture
def settings(env):
    return env.migrate(env.settings(thresholds=THRESHOLDS, detection={"enabled": False}, alerts={"clear_readings": 2}))


def open_rows(env):
    return env.query("SELECT id, severity FROM alerts WHERE NOT resolved ORDER BY id")


def test_open_alerts_survive_a_restart_and_continue(env, settings):
    first = make_sink(env, settings)
    assert feed(first, (0, 45)) == [("opened", "warning")]
    [(alert_id, _)] = open_rows(env)
    first.close()

    again = make_sink(env, settings)  # a new process: state comes from `alerts WHERE NOT resolved`
    assert feed(again, (1, 46)) == []  # still alerting: no second alert
    assert feed(again, (2, 65)) == [("escalated", "critical")]
    assert open_rows(env) == [(alert_id, "critical")]
    assert feed(again, (3, 30), (4, 30)) == [("resolved", "critical")]
    assert env.query("SELECT count(*), bool_and(resolved) FROM alerts") == [(1, True)]
    again.close()


def test_an_alert_already_open_in_the_database_is_adopted_not_doubled(env, settings):
    sink = make_sink(env, settings)
    with env.db() as conn:  # another instance (or a write just before a crash) opened it; this one does not know
        conn.execute("INSERT INTO sensors (sensor_id, type) VALUES ('s1', 'boiler')")
        other = conn.execute("INSERT INTO alerts (sensor_id, metric, type, message, severity, timestamp) VALUES "
                             "('s1', 'boiler_temp', 'threshold', 'from elsewhere', 'critical', now()) RETURNING id").fetchone()[0]
    assert feed(sink, (0, 45)) == [("opened", "warning")]  # judged as new here ...
    assert open_rows(env) == [(other, "critical")]  # ... but stored as the one already open
    assert env.redis.xlen(f"t{env.run_id}:alerts") == 0  # nothing new to announce
    assert feed(sink, (1, 30), (2, 30)) == [("resolved", "critical")]
    assert env.query("SELECT id, resolved FROM alerts") == [(other, True)]
    sink.close()


def test_an_alert_resolved_by_an_operator_is_let_go(env, settings):
    sink = make_sink(env, settings)
    feed(sink, (0, 45))
    [(alert_id, _)] = open_rows(env)
    env.query("UPDATE alerts SET resolved = true, resolved_at = now() WHERE id = %s RETURNING id", (alert_id,))
    sink.tick()  # the timer notices
    assert feed(sink, (1, 46)) == [("opened", "warning")]
    assert [r[0] for r in open_rows(env)] != [alert_id] and len(open_rows(env)) == 1
    sink.close()


def test_a_transition_of_an_alert_whose_opening_was_never_stored_stores_both(env, settings):
    sink = make_sink(env, settings)
    opened = sink.take(Batch([Reading("s1", "boiler", None, "boiler_temp", 45, T0, time.time())], [], {}, 1))
    assert [t.event for t in opened] == ["opened"]  # judged, but (say) shutdown came before it was stored
    assert feed(sink, (1, 30), (2, 30)) == [("resolved", "warning")]
    assert env.query("SELECT severity, resolved FROM alerts") == [("warning", True)]
    assert [r[0] for r in env.query("SELECT event FROM alert_events ORDER BY id")] == ["resolved"]
    sink.close()


def test_log_count_sensors_stay_out_of_offline_tracking_when_state_is_reloaded_on_partition_assignment(env):
    """The daemon calls partitions_assigned(set()) before the consumer joins, then the consumer's assignment
    loads every known sensor again: an `app:<app>` log-count sensor must not start an offline timer there
    either, or every app that logs goes offline and back between its count windows."""
    settings = env.migrate(env.settings(detection={"offline_after_s": 60}))
    with env.db() as conn:
        conn.execute("INSERT INTO sensors (sensor_id, type) VALUES ('dev-1', 'sensor'), ('app:billing', 'app')")
    now = [T0]
    cfg = settings.config
    sink = AlertRunner(alert_sections(cfg), settings.secrets.postgres_password, settings.secrets.redis_password, env.metrics(),
                       clock=lambda: now[0])
    sink.start()
    sink.partitions_assigned(set())  # what the daemon does before the consumer joins the group
    sink.partitions_assigned(set(range(cfg.kafka.partitions)))  # the consumer's assignment: state loaded again
    now[0] += 120
    sink.tick()
    assert env.query("SELECT sensor_id, type FROM alerts WHERE NOT resolved") == [("dev-1", "offline")]
    sink.close()


def test_a_flapping_alert_is_one_row_held_open_with_a_flapping_event(env):
    settings = env.migrate(env.settings(thresholds=THRESHOLDS, detection={"enabled": False},
                                        alerts={"clear_readings": 1, "flap": {"count": 2, "window_s": 100}}))
    sink = make_sink(env, settings)
    assert feed(sink, (0, 45), (1, 30)) == [("opened", "warning"), ("resolved", "warning")]
    assert feed(sink, (2, 45), (3, 30)) == [("opened", "warning"), ("flapping", "warning")]
    assert feed(sink, (4, 45), (5, 30), (6, 45), (7, 30)) == []  # comes and goes: nothing announced
    rows = env.query("SELECT resolved, message FROM alerts ORDER BY id")
    assert [r[0] for r in rows] == [True, False] and rows[1][1].startswith(
        "Flapping: boiler_temp of sensor s1 opened and resolved 2 times within 100 s (threshold, warning)")
    events = [e for _, e in env.redis.xrange(f"t{env.run_id}:alerts")]
    assert [e["event"] for e in events] == ["opened", "resolved", "opened", "flapping"]
    assert feed(sink, (107, 30)) == [("resolved", "warning")]  # clear and quiet for the window
    assert [r[0] for r in env.query("SELECT event FROM alert_events ORDER BY id")] == [
        "opened", "resolved", "opened", "flapping", "resolved"]
    sink.close()


def test_alerts_stream_at_maxmemory_holds_the_batch_and_the_runner_lives_on(env, tmp_path):
    """XADD to the alerts stream refused (Redis at maxmemory, noeviction): the runner's thread holds the batch and
    says it is blocked instead of crashing the daemon, and announces the alert once when Redis takes writes."""
    import threading

    import redis

    from tests.integration.services import redis_server

    server = redis_server(tmp_path).start()
    settings = env.migrate(env.settings(thresholds=THRESHOLDS, redis={"port": server.port},
                                        retry={"initial_interval_s": 0.05, "max_interval_s": 0.5}))
    from pipeline.operators.base import OperatorRunner

    r = redis.Redis(port=server.port)
    operator = make_sink(env, settings)
    sink = OperatorRunner(operator, settings.config.sinks.alerts, settings.config.retry, operator.metrics, 4)
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    try:
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("maxmemory", 1)  # below what it holds: every command that adds data is refused
        batch = Batch([Reading("s1", "boiler", None, "boiler_temp", 70.0, T0, T0)], [], {}, 1)
        sink.put(batch, threading.Event())
        time.sleep(2.0)
        assert thread.is_alive() and not batch.done.is_set()
        since, message = sink.blocked()
        assert message.startswith("refused: OutOfMemoryError: OOM command not allowed")
        r.config_set("maxmemory", 0)
        assert batch.done.wait(10)
        assert sink.blocked() is None
        stream = settings.config.redis.key_prefix + settings.config.redis.streams.alerts
        events = [f[b"event"] for _e, f in r.xrange(stream)]
        assert events == [b"opened"]
        assert env.query("SELECT count(*) FROM alerts") == [(1,)]
    finally:
        sink.finish()
        thread.join(10)
        sink.close()
        server.stop()
