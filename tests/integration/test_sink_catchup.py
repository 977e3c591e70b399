"""A best-effort sink catches up from its own checkpoint (its feed's committed offsets): after a clean stop while it
is far behind it gets every reading exactly once; after a kill -9 it gets every reading, at least once."""
from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline.ingest.sink_feed import feed_group
from pipeline.sinks import registry
from tests.integration.clients import DaemonProcess, Publisher, RunningPipeline, committed_offsets, wait_for
from tests.integration.test_sink_registry import JsonLinesSink, lines

pytestmark = pytest.mark.faults  # stops, kill -9 and restarts of a daemon whose sink takes seconds per write

ROOT = Path(__file__).resolve().parents[2]
USE = ["postgres", "redis", "dead_letter", "logs", "jsonl"]
# The daemon with the test's sink registered (the sink module is this repository's test code).
LAUNCHER = """import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from pipeline.sinks import registry
from tests.integration.test_sink_registry import JsonLinesSink
path, write_s = Path(sys.argv[1]), float(sys.argv[2])
registry.register("jsonl", lambda ctx: JsonLinesSink(path, write_s, dead_letters=ctx.dead_letters,
                                                     **ctx.common("jsonl")), durable=False)
import realtime_pipeline
sys.exit(realtime_pipeline.main(["--config", sys.argv[3]]))
"""


def register(path: Path, write_s: float) -> list:
    made: list[JsonLinesSink] = []

    def factory(ctx):
        made.append(JsonLinesSink(path, write_s, dead_letters=ctx.dead_letters, **ctx.common("jsonl")))
        return made[-1]
    registry.register("jsonl", factory, durable=False)
    return made


def publish_one_by_one(env, values, gap_s: float) -> None:
    """One reading per message, spaced so the main consumer takes each as a batch of its own."""
    pub = Publisher()
    for v in values:
        pub.publish_all([(f"{env.root}/s{v % 4}/temperature", str(float(v)))])
        time.sleep(gap_s)
    pub.close()


def identities(path: Path) -> Counter:
    return Counter((x["sensor_id"], x["value"]) for x in lines(path))


@pytest.fixture
def unregister():
    yield
    registry.unregister("jsonl")


def test_a_sink_far_behind_at_a_stop_gets_every_reading_exactly_once_after_the_restart(env, tmp_path, unregister):
    path = tmp_path / "readings.jsonl"
    extra = dict(sinks={"use": USE}, processing={"queue_max_batches": 1, "shutdown_timeout_s": 30})
    settings = env.migrate(env.settings(**extra))
    kafka = settings.config.kafka
    n = 100
    made = register(path, 10.0)
    with RunningPipeline(settings, env.metrics()) as p:
        publish_one_by_one(env, [0], 0)
        wait_for(lambda: made[0].writing.is_set(), 10, what="the slow sink's first write")
        # About 100 batches while the sink sits in its first 10 s write: far more than its queue holds.
        publish_one_by_one(env, range(1, n), 0.06)
        wait_for(lambda: sum(committed_offsets(kafka.consumer_group, kafka.topics.raw).values()) == n, 10,
                 what="the main consumer committed everything")
        assert env.query("SELECT count(*) FROM measurements")[0][0] == n
        jsonl = lambda: {s.name: s for s in p.status.sinks()}["jsonl"]  # noqa: E731
        assert jsonl().best_effort
        assert p.metrics.registry.get_sample_value("pipeline_sink_feed_lag", {"sink": "jsonl"}) == jsonl().lag
    written = identities(path)
    checkpoint = sum(committed_offsets(feed_group(kafka.consumer_group, "jsonl"), kafka.topics.raw).values())
    assert sum(written.values()) == checkpoint < n  # stopped behind, its checkpoint exactly what it wrote

    made = register(path, 0.0)
    with RunningPipeline(settings, env.metrics()):
        wait_for(lambda: len(identities(path)) == n, 30, what="the sink caught up after the restart")
        time.sleep(2)  # anything written twice would show by now
    again = identities(path)
    assert sorted(v for _, v in again) == [float(v) for v in range(n)]
    assert set(again.values()) == {1}, [k for k, c in again.items() if c > 1]  # nothing it had written came again
    assert sum(committed_offsets(feed_group(kafka.consumer_group, "jsonl"), kafka.topics.raw).values()) == n


class LaunchedDaemon(DaemonProcess):
    """The daemon with the test's JSON-lines sink registered as best-effort."""

    def __init__(self, config_path, log_path, sink_path: Path, write_s: float, launcher: Path):
        super().__init__(config_path, log_path)
        self.args = [str(sink_path), str(write_s), str(config_path)]
        self.launcher = launcher

    def start(self, ready_timeout: float = 40.0):
        import subprocess

        log = open(self.log_path, "ab")
        self._log_offset = log.tell()
        self.proc = subprocess.Popen([sys.executable, str(self.launcher), *self.args], stdout=log,
                                     stderr=subprocess.STDOUT, cwd=ROOT)
        wait_for(lambda: self.logged("event=sink_feed_assigned") and self.logged("event=mqtt_subscribed")
                 or self.proc.poll() is not None, ready_timeout, what="daemon ready")
        assert self.proc.poll() is None, f"daemon exited early:\n{self.log_tail()}"
        return self


def test_after_a_kill_9_while_behind_the_sink_gets_every_reading_at_least_once(env, tmp_path):
    path = tmp_path / "readings.jsonl"
    extra = dict(sinks={"use": USE}, processing={"queue_max_batches": 1})
    config = env.write_config(tmp_path / "config.yaml", **extra)
    kafka = env.migrate(env.settings(**extra)).config.kafka
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER.format(root=str(ROOT)))
    n = 100
    daemon = LaunchedDaemon(config, tmp_path / "daemon.log", path, 3.0, launcher)
    try:
        daemon.start()
        publish_one_by_one(env, range(n), 0.03)
        wait_for(lambda: sum(committed_offsets(kafka.consumer_group, kafka.topics.raw).values()) == n, 15,
                 what="the main consumer committed everything")
        wait_for(lambda: lines(path), 15, what="the sink's first write")
        daemon.kill()
        before = sum(identities(path).values())
        checkpoint = sum(committed_offsets(feed_group(kafka.consumer_group, "jsonl"), kafka.topics.raw).values())
        assert checkpoint <= before < n  # killed behind

        daemon = LaunchedDaemon(config, tmp_path / "daemon.log", path, 0.0, launcher)
        daemon.start()
        wait_for(lambda: len(identities(path)) == n, 30, what="the sink caught up after the restart")
        time.sleep(2)
    finally:
        daemon.stop()
    again = identities(path)
    assert sorted({v for _, v in again}) == [float(v) for v in range(n)]  # nothing lost
    # At-least-once: only what the sink had written past its last commit (the batch in flight) comes twice.
    assert sum(again.values()) - n <= before - checkpoint
