"""Retry exhaustion, listing and replaying dead letters, against the real services."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from pipeline.tools.dlq import read_marks, replay_group
from pipeline.records import EXHAUSTED, FAILED, DeadLetter, RawMessage
from pipeline.runtime.chain import StageChain
from pipeline.app.build import build_stages
from pipeline.sinks.deadletter import DeadLetterWriter
from tests.integration.clients import Publisher, RunningPipeline, messages_in, read_topic, wait_for
from tests.integration.conftest import ROOT


def dlq(config, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.tools.dlq", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


@pytest.mark.long
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
        again = dlq(config, "replay", "--kind", "retry_exhausted")  # replaying twice sends nothing twice
        assert again.returncode == 0 and "replayed 0 of 0" in again.stdout
        time.sleep(2)
    assert env.query("SELECT sensor_id, value FROM measurements WHERE value > 1e6") == [("dev-3", 5e6)]
    assert env.query("SELECT count(*) FROM measurements") == [(21,)]


@pytest.mark.faults  # runs for tens of seconds: the faults tier (make test), not make test-fast
def test_replay_sends_retry_exhausted_by_default_never_twice_and_one_message_of_bad_readings_is_one_letter(env, tmp_path):
    settings = env.settings()
    config = env.write_config(tmp_path / "config.yaml")
    kafka = settings.config.kafka
    metrics = env.metrics()
    chain = StageChain(build_stages(settings), metrics)
    now = time.time()

    def raw(payload: dict | bytes, offset: int) -> RawMessage:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return RawMessage(f"{env.root}/dev-1", body, now, b"dev-1", kafka.topics.raw, 0, offset)

    # Invalid input, through the real stages: 100 bad readings in one message, and a message that is not JSON.
    hundred = {"readings": {f"m{i}": "wet" for i in range(100)}, "timestamp": now - 5}
    out, dead = [], []
    chain.run(raw(hundred, 1), out, dead)
    chain.run(raw(b"{oops", 2), out, dead)
    assert out == [] and [len(d.refused) for d in dead] == [100, 0]
    exhausted = [DeadLetter(raw({"metric": "pressure", "value": 5e6 + i, "timestamp": now - i}, 10 + i), "sink_rejected",
                            "postgres", "CheckViolation", EXHAUSTED, attempts=3, metric="pressure") for i in range(3)]
    failed = [DeadLetter(raw({"metric": "pressure", "value": 1}, 20), "processing_error", "transform", "KeyError", FAILED)]
    writer = DeadLetterWriter(kafka, "test", metrics)
    writer.send(dead + exhausted + failed)
    writer.close()
    assert metrics.registry.get_sample_value("pipeline_dead_letters_total", {"kind": "invalid", "reason": "value_not_number"}) == 1

    listed = dlq(config, "list", "--kind", "invalid", "--json")
    rows = {row["reason"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert set(rows) == {"value_not_number", "invalid_json"}
    assert rows["value_not_number"]["metrics"] == [f"m{i}" for i in range(100)] and rows["invalid_json"]["metrics"] == []

    first = dlq(config, "replay")
    assert first.returncode == 0 and "replayed 3 of 3" in first.stdout, first.stdout + first.stderr
    sent = read_topic(kafka.topics.raw, expected=3)
    origins = sorted(dict(m.headers())["replayed_from"].decode().split(":")[0] for m in sent)
    assert origins == [kafka.topics.dead_letter_exhausted] * 3
    assert sorted(json.loads(m.value())["value"] for m in sent) == [5e6, 5e6 + 1, 5e6 + 2]
    marks = read_marks(kafka, replay_group(kafka), [(kafka.topics.dead_letter_exhausted, p) for p in range(4)])
    assert sum(marks.values()) == 3  # committed under <group>.dlq-replay: one past each replayed letter

    second = dlq(config, "replay")
    assert second.returncode == 0 and "replayed 0 of 0" in second.stdout, second.stdout + second.stderr

    invalid = dlq(config, "replay", "--kind", "invalid")
    assert invalid.returncode == 0 and "replayed 2 of 2" in invalid.stdout, invalid.stdout + invalid.stderr
    assert "replayed 0 of 0" in dlq(config, "replay", "--kind", "invalid").stdout
    assert "replayed 1 of 1" in dlq(config, "replay", "--reason", "processing_error").stdout
    assert "replayed 0 of 0" in dlq(config, "replay", "--kind", "processing_failure").stdout  # that run's mark counts too
    got = read_topic(kafka.topics.raw, expected=7, timeout=10)
    assert len(got) == 6
    assert sum(1 for m in got if m.value() == json.dumps(hundred).encode()) == 1


def test_a_replayed_reading_without_a_device_timestamp_keeps_its_identity(env, tmp_path):
    # The receive stamp is the identity of a timestamp-less reading: replay must send it back, not a new one.
    settings = env.migrate(env.settings(retry={"max_attempts": 2, "initial_interval_s": 0.05}))
    config = env.write_config(tmp_path / "config.yaml", retry={"max_attempts": 2, "initial_interval_s": 0.05})
    with env.db() as conn:
        conn.execute("ALTER TABLE measurements ADD CONSTRAINT plausible_value CHECK (value < 1000000)")
    with RunningPipeline(settings, env.metrics()):
        pub = Publisher()
        pub.publish_all([(f"{env.root}/dev-9/pressure", "7e6")])
        pub.close()
        [letter] = read_topic(settings.config.kafka.topics.dead_letter_exhausted, expected=1)
    received_at = float(dict(letter.headers())["received_at"])
    with env.db() as conn:
        conn.execute("ALTER TABLE measurements DROP CONSTRAINT plausible_value")
    with RunningPipeline(settings, env.metrics()):
        assert "replayed 1 of 1" in dlq(config, "replay").stdout
        wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] == 1, what="the replayed reading")
    [(stored,)] = env.query("SELECT extract(epoch FROM timestamp)::numeric * 1000000 FROM measurements")
    assert int(stored) == round(received_at * 1_000_000)


@pytest.mark.long
def test_a_failed_notification_is_dead_lettered_and_never_replayed_to_the_raw_topic(env, tmp_path):
    from pipeline.config import Secret
    from pipeline.sinks.notify import build_notifier

    tree = {"retry": {"initial_interval_s": 0.01, "max_interval_s": 0.02, "jitter": 0.0},
            "alerts": {"notifications": {"channels": [{"name": "ops", "url_env": "OPS_URL"}], "max_elapsed_s": 0.2}}}
    settings = env.settings(**tree)
    config = env.write_config(tmp_path / "config.yaml")  # the command needs no channel
    kafka, metrics = settings.config.kafka, env.metrics()
    writer = DeadLetterWriter(kafka, "test", metrics)
    # A real notifier whose channel refuses connections: its failure becomes a real dead letter.
    notifier = build_notifier(settings.config.alerts, {"OPS_URL": "http://127.0.0.1:9/hook"}, Secret(""),
                              settings.config.retry, metrics, dead_letters=writer)
    notifier.start()
    notifier.offer({"event": "opened", "alert_id": 41, "sensor_id": "dev-1", "metric": "pressure", "type": "threshold",
                    "severity": "critical", "message": "pressure of dev-1 is 9", "timestamp": time.time(), "value": 9.0})
    wait_for(lambda: metrics.registry.get_sample_value("pipeline_alert_notifications_failed_total", {"channel": "ops"}) == 1,
             what="the failed notification")
    notifier.stop(1)
    # Beside it, a reading a service refused: replayed as before.
    reading = RawMessage(f"{env.root}/dev-1", json.dumps({"metric": "pressure", "value": 5.0}).encode(), time.time(),
                         b"dev-1", kafka.topics.raw, 0, 3)
    writer.send([DeadLetter(reading, "sink_rejected", "postgres", "CheckViolation", EXHAUSTED, attempts=3)])
    writer.close()
    letters = read_topic(kafka.topics.dead_letter_exhausted, expected=2)
    assert sorted(dict(m.headers())["reason"].decode() for m in letters) == ["notification_failed", "sink_rejected"]

    first = dlq(config, "replay")
    assert first.returncode == 0 and "replayed 1 of 1" in first.stdout, first.stdout + first.stderr
    assert "1 notification_failed letter(s) passed over" in first.stderr
    asked = dlq(config, "replay", "--reason", "notification_failed")
    assert asked.returncode == 2 and "never replayed" in asked.stderr
    assert "replayed 0 of 0" in dlq(config, "replay", "--kind", "retry_exhausted").stdout
    sent = read_topic(kafka.topics.raw, expected=1)
    assert [m.value() for m in sent] == [reading.payload]
    assert messages_in(kafka.topics.raw) == 1  # the reading only: no notification reached the raw topic
    listed = [json.loads(line) for line in dlq(config, "list", "--reason", "notification_failed", "--json").stdout.splitlines()]
    assert [(row["stage"], row["payload"][:18]) for row in listed] == [("alert_notifier", '{"channel": "ops",')]


def test_a_message_whose_readings_the_store_refuses_among_good_ones_is_one_letter(env, tmp_path):
    """Two readings of one message break a rule of the database, in a batch of good ones: the message goes
    to the dead-letter topic once (listing both metrics), not once per reading, and the good ones are stored."""
    settings = env.migrate(env.settings())
    with env.db() as conn:
        conn.execute("ALTER TABLE measurements ADD CONSTRAINT plausible_value CHECK (value < 1000000)")
    t0 = time.time() - 100
    good = [(f"{env.root}/dev-{i}", json.dumps({"metric": "pressure", "value": 1000 + i, "timestamp": t0 + i}))
            for i in range(20)]
    bad = (f"{env.root}/dev-3", json.dumps({"readings": {"pressure": 5e6, "temperature": 7e6, "humidity": 40},
                                            "timestamp": t0 + 50}))
    metrics = env.metrics()
    with RunningPipeline(settings, metrics) as pipeline:
        pub = Publisher()
        pub.publish_all(good[:10] + [bad] + good[10:])
        pub.close()
        wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] == 21, what="the 21 good readings")
        letters = read_topic(settings.config.kafka.topics.dead_letter_exhausted, expected=1)
        time.sleep(1.0)  # a second letter for the same message would have been sent with the first
        assert pipeline.healthy()
    assert len(letters) == 1 and messages_in(settings.config.kafka.topics.dead_letter_exhausted) == 1
    h = {k: v.decode() for k, v in letters[0].headers()}
    assert (h["reason"], h["stage"], h["metrics"]) == ("sink_rejected", "postgres", "pressure,temperature")
    assert letters[0].value() == bad[1].encode()
    assert metrics.registry.get_sample_value("pipeline_dead_letters_total", {"kind": "retry_exhausted", "reason": "sink_rejected"}) == 1
    assert env.query("SELECT metric, value FROM measurements WHERE sensor_id = 'dev-3' ORDER BY metric") == [
        ("humidity", 40.0), ("pressure", 1003.0)]
