"""Retry exhaustion, listing and replaying dead letters, against the real services."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.integration.clients import Publisher, RunningPipeline, read_topic, wait_for
from tests.integration.conftest import ROOT


def dlq(config, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.dlq", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_refused_record_is_isolated_dead_lettered_then_listed_and_replayed_after_a_fix(env, tmp_path):
    config = env.write_config(tmp_path / "config.yaml", retry={"max_attempts": 3, "initial_interval_s": 0.05})
    settings = env.migrate(env.settings(retry={"max_attempts": 3, "initial_interval_s": 0.05}))
    # A rule the database enforces and the pipeline does not know about: the service is up, the record refused.
    with env.db() as conn:
        conn.execute("ALTER TABLE measurements ADD CONSTRAINT plausible_value CHECK (value < 1000000)")
    t0 = time.time() - 100
    good = [(f"{env.root}/dev-{i}", json.dumps({"metric": "pressure", "value": 1000 + i, "timestamp": t0 + i})) for i in range(20)]
    bad = (f"{env.root}/dev-3", json.dumps({"metric": "pressure", "value": 5e6, "timestamp": t0 + 50}))
    metrics = env.metrics()
    with RunningPipeline(settings, metrics) as pipeline:
        pub = Publisher()
        pub.publish_all(good[:10] + [bad] + good[10:])
        pub.close()
        wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] == 20, what="the 20 good readings")
        [letter] = read_topic(settings.config.kafka.topics.dead_letter_exhausted, expected=1)
        assert pipeline.healthy()
    h = {k: v.decode() for k, v in letter.headers()}
    assert (h["kind"], h["reason"], h["stage"], h["attempts"], h["metric"]) == ("retry_exhausted", "sink_rejected", "postgres", "3", "pressure")
    assert "plausible_value" in h["error"] and letter.value() == bad[1].encode()
    assert metrics.registry.get_sample_value("pipeline_dead_letters_total", {"kind": "retry_exhausted", "reason": "sink_rejected"}) == 1

    listed = dlq(config, "list", "--kind", "retry_exhausted", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["reason"] == "sink_rejected" and row["payload"] == bad[1]
    assert dlq(config, "list", "--reason", "invalid_json").stdout == ""

    with env.db() as conn:  # the fix
        conn.execute("ALTER TABLE measurements DROP CONSTRAINT plausible_value")
    with RunningPipeline(settings, env.metrics()):
        replayed = dlq(config, "replay", "--kind", "retry_exhausted")
        assert replayed.returncode == 0 and "replayed 1 of 1" in replayed.stdout
        wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] == 21, what="the replayed reading")
        again = dlq(config, "replay", "--kind", "retry_exhausted")  # replaying twice stores nothing twice
        assert again.returncode == 0
        time.sleep(2)
    assert env.query("SELECT sensor_id, value FROM measurements WHERE value > 1e6") == [("dev-3", 5e6)]
    assert env.query("SELECT count(*) FROM measurements") == [(21,)]
