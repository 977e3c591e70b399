"""limits.state_idle_s through the real daemon: a series that goes silent loses its in-memory state and its
Redis latest values; when it returns it is stored, aggregated and alerted on like a new one."""
from __future__ import annotations

import json
import time

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
    sink, agg = p.sinks[0], p.sinks[0].aggregator
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
