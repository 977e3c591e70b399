"""Finite everywhere, through the real daemon: a reading whose unit conversion overflows is dead-lettered
with reason value_not_finite and nothing of it is stored; huge but finite readings still get their window row."""
from __future__ import annotations

import json
import time

from tests.integration.clients import Publisher, RunningPipeline, read_topic, wait_for


def test_overflowing_conversion_is_dead_lettered_and_huge_readings_still_aggregate(env):
    settings = env.migrate()
    t0 = (int(time.time()) // 60 - 10) * 60  # a minute window well inside the accepted age
    root = env.root
    items = [
        (f"{root}/dev-big", json.dumps({"metric": "pressure", "value": 1.7e308, "unit": "kPa", "timestamp": t0 + 5})),
        (f"{root}/dev-ok", json.dumps({"metric": "pressure", "value": 101.3, "unit": "kPa", "timestamp": t0 + 5})),
        # Finite and already in hPa: stored; their window's mean (1.35e308) overflows a plain SQL avg().
        (f"{root}/dev-huge", json.dumps({"metric": "pressure", "value": 1e308, "timestamp": t0 + 1})),
        (f"{root}/dev-huge", json.dumps({"metric": "pressure", "value": 1.7e308, "timestamp": t0 + 2})),
        # Moves the partition watermarks past the window's end plus the grace (any partition may hold dev-huge).
        *[(f"{root}/dev-{i}", json.dumps({"metric": "pressure", "value": 1000.0, "timestamp": t0 + 200}))
          for i in range(40)],
    ]
    metrics = env.metrics()
    with RunningPipeline(settings, metrics) as pipeline:
        pub = Publisher()
        pub.publish_all(items)
        pub.close()
        [letter] = read_topic(settings.config.kafka.topics.dead_letter, expected=1)
        wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] == 43, what="the 43 finite readings")
        row = wait_for(lambda: env.query("SELECT avg_value, min_value, max_value, count FROM aggregations "
                                         "WHERE sensor_id = 'dev-huge' AND period = '1m'"), 60,
                       what="the window row of the huge readings")
        assert pipeline.healthy()
    h = {k: v.decode() for k, v in letter.headers()}
    assert (h["reason"], h["kind"], h["stage"]) == ("value_not_finite", "invalid", "transform")
    assert json.loads(letter.value())["value"] == 1.7e308
    assert metrics.registry.get_sample_value("pipeline_dead_letters_total", {"kind": "invalid", "reason": "value_not_finite"}) == 1
    assert env.query("SELECT count(*) FROM measurements WHERE sensor_id = 'dev-big'") == [(0,)]
    assert env.query("SELECT count(*) FROM measurements WHERE value = 'Infinity' OR value = '-Infinity' OR value = 'NaN'") == [(0,)]
    assert env.query("SELECT value FROM measurements WHERE sensor_id = 'dev-ok'") == [(1013.0,)]
    assert not env.redis.exists(f"t{env.run_id}:latest:dev-big")
    assert row == [(1.35e308, 1e308, 1.7e308, 2)]
