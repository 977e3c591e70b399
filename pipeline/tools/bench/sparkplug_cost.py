"""Sparkplug B against native JSON, per reading, in-process: the main chain from decode to the limits filter.

    python -m pipeline.tools.bench.sparkplug_cost [--messages 500] [--batches 100] [--samples 5]

The daemon's chain (build_stages) is fed batches of `--messages` messages: native JSON (`sensors/<id>`, format
`json`) through config.yaml's chain, and Sparkplug B DDATA through the chain of config.yaml plus
deploy/formats/sparkplug.yaml (the sparkplug operator right after decoding, its births kept in memory), from 10
edge nodes of 10 devices, each metric by alias with its datatype and timestamp, as Eclipse Tahu's edge node sends
them, after their births. One reading per message, then three.
Samples of the two alternate; the figures are the medians (and minima) of `--samples` samples, in CPU µs per
reading (time.process_time), the ratio Sparkplug's over JSON's.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time
from pathlib import Path

import orjson
import yaml
from prometheus_client import CollectorRegistry

from ...app.build import build_stages
from ...config import Settings, load, parse
from ...config.secret import Secrets
from ...observability.metrics import Metrics
from ...operators.sparkplug.operator import SparkplugOperator
from ...operators.sparkplug.proto import DataType, Payload
from ...records import RawMessage
from ...registry.formats import OperatorServices
from ...runtime.chain import StageChain
from ...runtime.format_operator import FormatOperatorStage
from .chain_cost import messages as json_messages

ROOT = Path(__file__).resolve().parents[3]
NODES, DEVICES = 10, 10
METRICS = ("Inputs/Temperature", "Inputs/Humidity", "Inputs/Pressure")


def _merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def settings() -> Settings:
    tree = _merged(yaml.safe_load((ROOT / "config.yaml").read_text()),
                   yaml.safe_load((ROOT / "deploy" / "formats" / "sparkplug.yaml").read_text()))
    return Settings(config=parse(tree, {}), secrets=Secrets.from_env({}), path="bench")


class _Births:
    """The births' store in memory: the bench measures the data path, which reads none."""

    def save(self, births) -> None: ...
    def load(self, partitions) -> list: return []
    def close(self) -> None: ...


def _payload(metrics: list[dict], seq: int, ts_ms: int) -> bytes:
    p = Payload(timestamp=ts_ms, seq=seq)
    for m in metrics:
        p.metrics.add(**m)
    return p.SerializeToString()


def sparkplug_messages(n: int, readings: int, now: float) -> tuple[list[RawMessage], list[RawMessage]]:
    """(births, `n` DDATA messages of `readings` metrics each, round robin over the devices), keyed by node."""
    births, data, seqs = [], [], {}
    offset = 0
    for node in range(NODES):
        topic = f"spBv1.0/Plant/NBIRTH/node-{node}"
        births.append(RawMessage(topic, _payload([dict(name="bdSeq", datatype=DataType.UInt64, long_value=0)], 0,
                                                 int(now * 1000)), now, b"", "raw", node % 6, offset))
        offset += 1
        for dev in range(DEVICES):
            seqs[node] = seqs.get(node, 0) + 1
            body = [dict(name=name, alias=a, datatype=DataType.Double, double_value=20.0)
                    for a, name in enumerate(METRICS)]
            births.append(RawMessage(f"spBv1.0/Plant/DBIRTH/node-{node}/dev-{dev}",
                                     _payload(body, seqs[node], int(now * 1000)), now, b"", "raw", node % 6, offset))
            offset += 1
    for i in range(n):
        node, dev = i % NODES, (i // NODES) % DEVICES
        seqs[node] = (seqs[node] + 1) % 256
        ts_ms = int((now - 1.0 + i * 0.001) * 1000)
        body = [dict(alias=a, timestamp=ts_ms, datatype=DataType.Double, double_value=20.0 + (i + a) % 7)
                for a in range(readings)]
        data.append(RawMessage(f"spBv1.0/Plant/DDATA/node-{node}/dev-{dev}", _payload(body, seqs[node], ts_ms), now,
                               f"node-{node}".encode(), "raw", node % 6, offset + i))
    return births, data


def chain(sparkplug: bool) -> StageChain:
    """Sparkplug: config.yaml plus the recipe, the operator right after decoding; else config.yaml's own chain."""
    metrics = Metrics(CollectorRegistry())
    if not sparkplug:
        return StageChain(build_stages(load(ROOT / "config.yaml", env={})), metrics)
    s = settings()
    services = OperatorServices(s.config, metrics, lambda: None, lambda *a: True, lambda fn, _op: fn())
    op = SparkplugOperator(services)
    op.store = _Births()
    return StageChain(build_stages(s, operators=[FormatOperatorStage("sparkplug", op, metrics)]), metrics)


def prepared(raws: list[RawMessage], warm: list[RawMessage], readings: int, sparkplug: bool):
    """A chain that has seen `warm` and `raws` once (every sensor and metric known to the limits filter)."""
    c = chain(sparkplug)
    c.run_batch(warm)
    out, dead = c.run_batch(raws)
    if dead or len(out) != len(raws) * readings:
        raise SystemExit(f"setup: {len(out)} records out, {len(dead)} dead letters ({dead[:1]})")
    return c


def sample(c: StageChain, raws: list[RawMessage], readings: int, batches: int) -> float:
    """CPU µs per reading over `batches` batches (this process's CPU time: on a machine shared with other work,
    wall time counts their turns too)."""
    gc.collect()
    start = time.process_time()
    for _ in range(batches):
        c.run_batch(raws)
        c.flush_counts()
    return (time.process_time() - start) / (batches * len(raws) * readings) * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=500, help="messages per batch")
    p.add_argument("--batches", type=int, default=100, help="batches per sample")
    p.add_argument("--samples", type=int, default=5)
    args = p.parse_args()
    now = time.time()
    for readings in (1, 3):
        native = json_messages(args.messages, readings, now)
        births, data = sparkplug_messages(args.messages, readings, now)
        chains = prepared(native, [], readings, False), prepared(data, births, readings, True)
        js, sp = [], []
        for _ in range(args.samples):  # interleaved: a busy spell of the machine hits both alike
            js.append(sample(chains[0], native, readings, args.batches))
            sp.append(sample(chains[1], data, readings, args.batches))
        print(f"readings_per_message={readings} json_us_per_reading={statistics.median(js):.2f} "
              f"sparkplug_us_per_reading={statistics.median(sp):.2f} ratio={statistics.median(sp) / statistics.median(js):.2f} "
              f"min_json={min(js):.2f} min_sparkplug={min(sp):.2f} ratio_of_minima={min(sp) / min(js):.2f}")


if __name__ == "__main__":
    main()
