"""`bench --dialect`: each dialect's payloads, through its recipe and the real pure stages, are the readings the
benchmark counts (one per reading per message, the publish time as their time), so its loss, latency and CPU per
reading mean the same as for native JSON."""
from __future__ import annotations

import time

import pytest
import yaml
from prometheus_client import CollectorRegistry

from pipeline.app.build import build_pure_stages
from pipeline.config import Secrets, Settings, parse
from pipeline.observability.metrics import Metrics
from pipeline.operators.sparkplug.operator import SparkplugOperator
from pipeline.operators.sparkplug.proto import Payload
from pipeline.records import RawMessage
from pipeline.registry.formats import OperatorServices
from pipeline.runtime.chain import StageChain
from pipeline.runtime.format_operator import FormatOperatorStage
from pipeline.stages.mapping import with_source_topics
from pipeline.tools.bench import __main__ as bench_cli
from pipeline.tools.bench.configtree import ROOT, deep_merge
from pipeline.tools.bench.dialects import DIALECTS, level_tree

ROOT_LEVEL = "bench1234"
STEP = 0.002  # between two messages (500 msg/s): apart in every dialect's resolution (Sparkplug's is a millisecond)


class _Births:
    """The Sparkplug births' store in memory (the daemon's is PostgreSQL)."""

    def save(self, births) -> None: ...
    def load(self, partitions) -> list: return []
    def close(self) -> None: ...


def chain(dialect, published: list | None = None) -> StageChain:
    """The daemon's pure stages for the dialect's config, and a format's operator (the Sparkplug host) right after
    decoding as the daemon runs it; what the operator publishes (rebirth requests) goes to `published`."""
    tree = deep_merge(yaml.safe_load((ROOT / "config.yaml").read_text()), {"mqtt": {"topics": [f"{ROOT_LEVEL}/#"]}})
    tree = deep_merge(tree, dialect.config())
    settings = Settings(parse(tree, {}), Secrets.from_env({}), "t")
    metrics = Metrics(CollectorRegistry())
    stages = build_pure_stages(settings)
    if "sparkplug" in settings.config.processing.formats:
        services = OperatorServices(settings.config, metrics, lambda: None,
                                    lambda *a: (published if published is not None else []).append(a) or True,
                                    lambda fn, _op: fn())
        op = SparkplugOperator(services)
        op.store = _Births()
        stages[1:1] = [FormatOperatorStage("sparkplug", op, metrics)]
    return StageChain(stages, metrics)


def level(d, readings: int, sensors: list[str], rounds: int, now: float) -> list[RawMessage]:
    """A level as the benchmark publishes it, as Kafka hands it on (one partition, in order): the dialect's set-up,
    then `rounds` messages per sensor in turn (loadgen's order and seq), each `STEP` after the last."""
    setup = d.setup(ROOT_LEVEL, sensors, readings) if d.setup else []
    load = [(d.topic.format(root=ROOT_LEVEL, sensor=sensors[k % len(sensors)]),
             d.payload(k // len(sensors) if d.numbered else k, now + k * STEP, readings))
            for k in range(rounds * len(sensors))]
    return [RawMessage(t, p, now, None, "raw", 0, i) for i, (t, p) in enumerate(setup + load)]


@pytest.mark.parametrize("name", sorted(DIALECTS))
@pytest.mark.parametrize("readings", [1, 3])
def test_each_dialect_gives_the_benchmark_its_readings_at_their_publish_time(name, readings):
    d = DIALECTS[name]
    published: list = []
    c = chain(d, published)
    now = time.time()
    sensors = [f"s1-{i:04d}" for i in range(50)]
    rounds = 3
    out, dead = c.run_batch(level(d, readings, sensors, rounds, now))
    assert dead == []
    assert published == []  # no rebirth asked for: births first, aliases known, no gap in seq
    assert len(out) == rounds * 50 * readings  # one per reading published (a set-up message adds none)
    ids = {d.sensor_id.format(sensor=s): s for s in sensors}
    assert {r.sensor_id for r in out} == set(ids)
    # The benchmark counts a level's readings by the stored ids' prefix.
    assert all(r.sensor_id.startswith(d.sensor_prefix("s1-")) for r in out)
    tolerance = 5e-4 if name == "sparkplug" else 1e-6  # Sparkplug's timestamps are milliseconds
    for k in range(rounds * 50):  # the benchmark's latency is arrival minus this time: it must be the publish time
        sid = d.sensor_id.format(sensor=sensors[k % 50])
        times = sorted({r.ts for r in out if r.sensor_id == sid})
        assert times[k // 50] == pytest.approx(now + k * STEP, abs=tolerance)
    assert len({(r.sensor_id, r.metric, r.ts) for r in out}) == rounds * 50 * readings  # each reading's identity
    # The same metrics as native JSON's: the same thresholds, detection and windows downstream.
    assert {r.metric for r in out} == ({"temperature"} if readings == 1 else {"temperature", "humidity", "pressure"})


def test_sparkplug_seq_counts_per_edge_node_and_wraps_at_256():
    """Each simulated device is an edge node of its own: its DDATA count on from its births (seq 0 and 1), and
    past 255 start again at 0, so the host application sees no gap (a gap would cost a rebirth request)."""
    d = DIALECTS["sparkplug"]
    published: list = []
    c = chain(d, published)
    now = time.time()
    msgs = level(d, 1, ["s1-0000", "s1-0001"], 300, now)
    seqs = [Payload.FromString(m.payload).seq for m in msgs if m.mqtt_topic.endswith("/s1-0001/PLC1")]
    assert seqs[:4] == [1, 2, 3, 4] and seqs[254:258] == [255, 0, 1, 2]  # DBIRTH, then DDATA
    out, dead = c.run_batch(msgs)
    assert dead == [] and published == [] and len(out) == 600


def test_sparkplug_data_before_its_births_is_refused_and_asks_for_them():
    """The set-up is what the dialect's data needs: without it, nothing the benchmark counts gets through."""
    d = DIALECTS["sparkplug"]
    published: list = []
    c = chain(d, published)
    now = time.time()
    msgs = level(d, 1, ["s1-0000"], 3, now)[2:]  # the births left out
    out, dead = c.run_batch(msgs)
    assert out == [] and len(dead) == 3
    assert [t for t, *_ in published] == ["spBv1.0/Bench/NCMD/s1-0000"]


def test_the_dialect_option_offers_the_tables_mapped_dialects(capsys):
    with pytest.raises(SystemExit):
        bench_cli.main(["--dialect", "no-such-dialect"])
    assert "choose from 'sparkplug', 'tasmota'" in capsys.readouterr().err  # from the table: a new entry is offered at once
    assert DIALECTS["tasmota"].recipe == "tasmota" and DIALECTS["native"].recipe is None



def test_each_level_subscribes_to_its_dialects_devices_and_carries_no_earlier_recipe():
    """The benchmark's daemon subscribes to its own root: a level must add its dialect's devices (a format's topics,
    spBv1.0/#; a mapping's are added by the daemon itself), or every reading of the level is lost before the daemon;
    and it carries no earlier level's recipe (formats, renames, validation)."""
    from paho.mqtt.client import topic_matches_sub

    base = deep_merge(yaml.safe_load((ROOT / "config.yaml").read_text()), {"mqtt": {"topics": [f"{ROOT_LEVEL}/#"]}})
    for name in ["sparkplug", "tasmota", "native", "telegraf", "sparkplug"]:  # levels one after the other
        d = DIALECTS[name]
        cfg = parse(level_tree(base, d), {})
        topics = with_source_topics(cfg).topics
        assert topics[0] == f"{ROOT_LEVEL}/#" and "sensors/#" not in topics  # the recipe's defaults not taken
        device = d.topic.format(root=ROOT_LEVEL, sensor="s1-0000")
        assert any(topic_matches_sub(t, device) for t in topics), (name, topics)
        assert [s.name for s in cfg.sources] == ([d.recipe] if d.recipe and d.recipe != "sparkplug" else [])
        assert ("sparkplug" in cfg.processing.formats) == (name == "sparkplug")
        assert (cfg.sparkplug.rename == {f"inputs_{m}": m for m in ("temperature", "humidity", "pressure")}) == (
            name == "sparkplug")
    assert DIALECTS["sparkplug"].subscriptions() == ["spBv1.0/#"] and DIALECTS["tasmota"].subscriptions() == []
    assert base["mqtt"]["topics"] == [f"{ROOT_LEVEL}/#"]  # the benchmark's own config untouched
