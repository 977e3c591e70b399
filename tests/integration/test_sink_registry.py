"""Sinks by name: a sink registered from outside pipeline/ runs in the real daemon; a best-effort sink that takes
10 s per write holds neither the Kafka commits nor the PostgreSQL rows, keeps its own checkpoint and catches up."""
from __future__ import annotations

import json
import threading
import time

import pytest

from pipeline.sinks import registry
from pipeline.sinks.base import BatchingSink
from tests.integration.clients import Publisher, RunningPipeline, committed_offsets, wait_for


class JsonLinesSink(BatchingSink):
    """Readings appended to a file, one JSON object a line; its checkpoint (next offset per partition) beside it."""

    name = "jsonl"

    def __init__(self, path, write_s: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.path, self.write_s = path, write_s
        self.writes = 0
        self.writing = threading.Event()  # set while the first write is under way

    def select(self, batch):
        return batch.readings

    def write(self, records):
        self.writing.set()
        time.sleep(self.write_s)  # a slow store (object storage, a remote file system)
        with open(self.path, "a") as f:
            for r in records:
                f.write(json.dumps({"sensor_id": r.sensor_id, "metric": r.metric, "value": r.value}) + "\n")
        self.writes += 1

    def checkpoint(self, offsets):
        held = json.loads(self.path.with_suffix(".offsets").read_text()) if self.path.with_suffix(".offsets").exists() else {}
        held.update({str(p): o for (_, p), o in offsets.items()})
        self.path.with_suffix(".offsets").write_text(json.dumps(held))


def lines(path) -> list:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def jsonl_sink(tmp_path):
    made: list[JsonLinesSink] = []

    def use(durable: bool, write_s: float = 0.0):
        def factory(ctx):
            sink = JsonLinesSink(tmp_path / "readings.jsonl", write_s, dead_letters=ctx.dead_letters,
                                 **ctx.common("jsonl"))
            made.append(sink)
            return sink
        registry.register("jsonl", factory, durable=durable)
        return made

    yield use
    registry.unregister("jsonl")


def publish(env, n: int) -> None:
    pub = Publisher()
    pub.publish_all([(f"{env.root}/s{i % 4}/temperature", str(20.0 + i)) for i in range(n)])
    pub.close()


def test_a_sink_registered_from_outside_the_package_runs_in_the_daemon(env, jsonl_sink, tmp_path):
    made = jsonl_sink(durable=True)
    settings = env.migrate(env.settings(sinks={"use": ["postgres", "redis", "dead_letter", "logs", "jsonl"]}))
    with RunningPipeline(settings, env.metrics()) as p:
        assert [s.name for s in p.sinks][:5] == ["postgres", "redis", "dead_letter", "logs", "jsonl"]
        publish(env, 20)
        wait_for(lambda: len(lines(tmp_path / "readings.jsonl")) == 20, what="20 lines in the file")
        wait_for(lambda: sum(committed_offsets(settings.config.kafka.consumer_group,
                                               settings.config.kafka.topics.raw).values()) == 20,
                 what="20 messages committed")
    assert made[0].durable
    assert sorted(x["value"] for x in lines(tmp_path / "readings.jsonl")) == [20.0 + i for i in range(20)]
    assert env.query("SELECT count(*) FROM measurements")[0][0] == 20


def test_an_unknown_sink_name_is_refused_with_the_key_named(env):
    settings = env.settings(sinks={"use": ["postgres", "nowhere"]})
    with pytest.raises(ValueError, match=r"sinks\.use: unknown sink 'nowhere'"):
        RunningPipeline(settings, env.metrics())


@pytest.mark.faults  # runs for tens of seconds: the faults tier (make test), not make test-fast
def test_a_slow_best_effort_sink_holds_neither_commits_nor_rows_and_catches_up(env, jsonl_sink, tmp_path):
    made = jsonl_sink(durable=False, write_s=10.0)
    settings = env.migrate(env.settings(sinks={"use": ["postgres", "redis", "dead_letter", "logs", "jsonl"]}))
    group, raw = settings.config.kafka.consumer_group, settings.config.kafka.topics.raw
    with RunningPipeline(settings, env.metrics()):
        publish(env, 10)
        wait_for(lambda: made[0].writing.is_set(), 10, what="the slow sink's first write")
        started = time.monotonic()
        publish(env, 30)  # arrives while the slow sink is inside its first 10 s write
        wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] == 40, 6, what="40 rows")
        wait_for(lambda: sum(committed_offsets(group, raw).values()) == 40, 6, what="40 messages committed")
        assert time.monotonic() - started < 8 and made[0].writes == 0  # still on its first batch
        wait_for(lambda: len(lines(tmp_path / "readings.jsonl")) == 40, 40, what="the slow sink caught up")
        checkpoint = json.loads((tmp_path / "readings.offsets").read_text())
        assert sum(checkpoint.values()) == 40  # its own position: every message it wrote
    assert not made[0].durable


def test_in_group_mode_a_best_effort_sinks_feed_follows_the_consumers_partitions(env, jsonl_sink, tmp_path):
    made = jsonl_sink(durable=False)
    settings = env.migrate(env.settings(kafka={"assignment": "group"},
                                        sinks={"use": ["postgres", "redis", "dead_letter", "logs", "jsonl"]}))
    group, raw = settings.config.kafka.consumer_group, settings.config.kafka.topics.raw
    with RunningPipeline(settings, env.metrics()) as p:
        [feed] = p.feeds
        wait_for(lambda: feed._held == {tp.partition for tp in p.source.assigned}, 10, what="the feed's partitions")
        publish(env, 20)
        wait_for(lambda: len(lines(tmp_path / "readings.jsonl")) == 20, what="20 lines in the file")
        # The sink's checkpoint is its feed's commits, under a group of its own.
        wait_for(lambda: sum(committed_offsets(f"{group}.sink.jsonl", raw).values()) == 20, what="the feed's commits")
    assert sorted(x["value"] for x in lines(tmp_path / "readings.jsonl")) == [20.0 + i for i in range(20)]
    assert not made[0].durable
