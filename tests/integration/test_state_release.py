"""limits.state_idle_s through the real daemon: a series that goes silent loses its in-memory state and its
Redis latest values; when it returns it is stored, aggregated and alerted on like a new one."""
from __future__ import annotations

import json
import time

from pipeline.app.build import alert_sections
from pipeline.operators.alerts.detectors import HISTORY, OUT_N
from tests.integration.clients import Publisher, RunningPipeline, wait_for

IDLE_S = 2.0
SETTINGS = dict(limits={"state_idle_s": IDLE_S},
                aggregation={"periods": ["10s"], "grace_s": 0, "max_lateness_s": 30, "idle_close_s": 1},
                thresholds={"temperature": {"warning": {"max": 40}}},
                detection={"offline_after_s": 0, "metrics": {"temperature": {"outlier": {"z_warning": 4, "min_samples": 3}}}},
                processing={"interval_s": 0.5})


def reading(root: str, sensor: str, value: float, ts: float) -> tuple[str, str]:
    return f"{root}/{sensor}", json.dumps({"metric": "temperature", "value": value, "timestamp": ts})


def held(p, sensor: str) -> dict[str, bool]:
    """Where the daemon still holds state of the sensor (each owner's own structures, read, never changed)."""
    sink, agg = p.sinks[0], p.windows
    limits = p.chain.stages[-1].registry
    ev = p.alerts.evaluator
    return {"limits": bool(limits.metrics_of(sensor)), "postgres": sensor in sink.known_sensors,
            "partials": (sensor, "temperature") in agg.partials.acc,
            "evaluator": (sensor, "temperature") in ev.series or sensor in ev.sensor_info,
            "detector history": len(ev.series.get((sensor, "temperature"), ())) >= HISTORY}


def test_an_idle_series_is_released_and_rebuilt_when_it_returns(env):
    settings = env.migrate(env.settings(**SETTINGS))
    prefix, root = f"t{env.run_id}:", env.root
    pub = Publisher()
    with RunningPipeline(settings, env.metrics()) as p:
        t0 = (time.time() // 10) * 10 - 10  # the previous 10 s window: it closes as soon as steady reports
        pub.publish_all([reading(root, "comet", v, t0 + 1 + i) for i, v in enumerate((20.0, 21.0, 20.5))])
        wait_for(lambda: env.redis.hget(prefix + "latest:comet", "temperature") == "20.5", what="comet's latest value")
        assert 0 < env.redis.ttl(prefix + "latest:comet") <= IDLE_S * 1.1 + 1
        wait_for(lambda: all(held(p, "comet").values()), what="comet's state in every owner")

        # comet goes silent; steady keeps reporting (it moves the watermark and passes the limits stage).
        deadline = time.time() + IDLE_S + 10  # (running values go once their window is closed too)
        while time.time() < deadline and any(held(p, "comet").values()):
            pub.publish_all([reading(root, "steady", 20.0, time.time())])
            time.sleep(0.3)
        assert held(p, "comet") == dict.fromkeys(("limits", "postgres", "partials", "evaluator", "detector history"), False)
        assert all(held(p, "steady").values())
        assert env.redis.exists(prefix + "latest:comet") == 0  # expired with the series

        def trimmed():  # the sensor index is trimmed on writes (scores are whole seconds: up to 1 s later)
            pub.publish_all([reading(root, "steady", 20.0, time.time())])
            time.sleep(0.2)
            return env.redis.zscore(prefix + "sensors", "comet") is None
        wait_for(trimmed, timeout=5, what="comet trimmed from the sensor index")
        assert env.redis.zscore(prefix + "sensors", "steady")

        # comet returns: stored, aggregated into a window of its new readings only, and judged again.
        t1 = time.time()
        pub.publish_all([reading(root, "comet", 50.0, t1)])
        wait_for(lambda: env.query("SELECT severity FROM alerts WHERE sensor_id = 'comet' AND type = 'threshold'"),
                 what="the returning series' threshold alert")
        wait_for(lambda: env.redis.hget(prefix + "latest:comet", "temperature") == "50.0", what="comet's latest again")
        assert env.redis.zscore(prefix + "sensors", "comet") is not None
        partial = wait_for(lambda: env.redis.hget(prefix + "partial:comet", "temperature:10s"), what="comet's running values")
        assert json.loads(partial)["count"] == 1 and json.loads(partial)["avg"] == 50.0
        assert p.alerts.evaluator.series[("comet", "temperature")][OUT_N] == 1  # warming up afresh
        while time.time() < t1 + 12:  # the window of the returning reading closes by the wall clock
            pub.publish_all([reading(root, "steady", 20.0, time.time())])
            if env.query("SELECT count FROM aggregations WHERE sensor_id = 'comet' AND timestamp >= to_timestamp(%s) "
                         "AT TIME ZONE 'UTC' - interval '10 seconds'", (t1,)):
                break
            time.sleep(0.5)
    pub.close()
    windows = env.query("SELECT avg_value, count FROM aggregations WHERE sensor_id = 'comet' ORDER BY timestamp")
    assert windows[-1] == (50.0, 1) and sum(c for _, c in windows) == 4
    assert env.query("SELECT count(*) FROM sensors WHERE sensor_id = 'comet'")[0][0] == 1  # registered once


def test_an_offline_alert_of_a_sensor_that_stays_away_is_released_and_resolved_when_it_returns(env):
    """The runner against the real PostgreSQL with an injected clock: the open offline alert leaves memory after
    state_idle_s, stays open in the database, and the sensor's return loads and resolves it."""
    from pipeline.operators.alerts.runner import AlertRunner
    from pipeline.records import RawMessage, Reading
    from pipeline.runtime.batch import Batch

    settings = env.migrate(env.settings(limits={"state_idle_s": 100}, detection={"offline_after_s": 10},
                                        thresholds={"temperature": {"warning": {"max": 40}}}))
    cfg, now = settings.config, [time.time()]
    runner = AlertRunner(alert_sections(cfg), settings.secrets.postgres_password, settings.secrets.redis_password, env.metrics(),
                       clock=lambda: now[0])

    def feed(sensor: str) -> list:
        r = Reading(sensor, "sensor", None, "temperature", 20.0, now[0], now[0], RawMessage("t", b"", now[0], partition=0))
        out = list(runner.take(Batch([r], [], {}, 1)))
        runner.write(out)
        return out

    runner.start()
    try:
        feed("drifter")
        feed("steady")
        now[0] += 11
        feed("steady")
        runner.tick()  # drifter: silent past its limit
        [(alert_id, resolved)] = env.query("SELECT id, resolved FROM alerts WHERE sensor_id = 'drifter' AND type = 'offline'")
        assert not resolved and ("drifter", None, "offline") in runner.evaluator.book.open
        for _ in range(25):  # 250 s of ticks; steady keeps reporting
            now[0] += 10
            feed("steady")
            runner.tick()
        assert "drifter" not in runner.evaluator.sensors() and runner.evaluator.released_open == 1
        assert env.query("SELECT resolved FROM alerts WHERE id = %s", (alert_id,)) == [(False,)]  # still open there
        now[0] += 10
        out = feed("drifter")  # it returns
        assert [(t.event, t.alert.id) for t in out] == [("resolved", alert_id)]
        assert env.query("SELECT resolved FROM alerts WHERE id = %s", (alert_id,)) == [(True,)]
        assert env.query("SELECT event FROM alert_events WHERE alert_id = %s ORDER BY id", (alert_id,)) == [
            ("opened",), ("resolved",)]
    finally:
        runner.close()
