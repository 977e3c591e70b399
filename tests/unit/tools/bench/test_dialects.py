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
from pipeline.records import RawMessage
from pipeline.runtime.chain import StageChain
from pipeline.tools.bench import __main__ as bench_cli
from pipeline.tools.bench.configtree import ROOT, deep_merge
from pipeline.tools.bench.dialects import DIALECTS

ROOT_LEVEL = "bench1234"


def chain(dialect) -> StageChain:
    tree = deep_merge(yaml.safe_load((ROOT / "config.yaml").read_text()), {"mqtt": {"topics": [f"{ROOT_LEVEL}/#"]}})
    tree = deep_merge(tree, dialect.config())
    return StageChain(build_pure_stages(Settings(parse(tree, {}), Secrets.from_env({}), "t")), Metrics(CollectorRegistry()))


@pytest.mark.parametrize("name", sorted(DIALECTS))
@pytest.mark.parametrize("readings", [1, 3])
def test_each_dialect_gives_the_benchmark_its_readings_at_their_publish_time(name, readings):
    d = DIALECTS[name]
    c = chain(d)
    now = time.time()
    msgs = [RawMessage(d.topic.format(root=ROOT_LEVEL, sensor=f"s1-{i:04d}"), d.payload(i, now + i * 1e-6, readings), now)
            for i in range(50)]
    out, dead = c.run_batch(msgs)
    assert dead == []
    assert len(out) == 50 * readings
    assert {r.sensor_id for r in out} == {f"s1-{i:04d}" for i in range(50)}
    for i in range(50):  # the benchmark's latency is arrival minus this time: it must be the publish time
        times = [r.ts for r in out if r.sensor_id == f"s1-{i:04d}"]
        assert times == pytest.approx([now + i * 1e-6] * readings, abs=1e-6)
    assert len({(r.sensor_id, r.metric) for r in out}) == 50 * readings
    # The same metrics as native JSON's: the same thresholds, detection and windows downstream.
    assert {r.metric for r in out} == ({"temperature"} if readings == 1 else {"temperature", "humidity", "pressure"})


def test_the_dialect_option_offers_the_tables_mapped_dialects(capsys):
    with pytest.raises(SystemExit):
        bench_cli.main(["--dialect", "no-such-dialect"])
    assert "choose from 'tasmota'" in capsys.readouterr().err  # from the table: a new entry is offered at once
    assert DIALECTS["tasmota"].recipe == "tasmota" and DIALECTS["native"].recipe is None

