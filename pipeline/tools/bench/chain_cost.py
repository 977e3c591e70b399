"""The stage chain's cost per message, in-process: decode to the limits filter, no services.

    python -m pipeline.tools.bench.chain_cost [--messages 500] [--batches 200] [--samples 5] [--dialect native]
                                              [--sinks]

config.yaml's stages (build_stages, as the daemon builds them) are fed batches of `--messages` JSON messages
from 100 sensors, one reading per message and then three, the way the Kafka source hands them over (a
consumed batch at a time; on a chain without `run_batch`, one `run` per message). Each sample times
`--batches` batches with time.perf_counter; the figure is the median of `--samples` samples, in µs per message.

`--sinks` adds, per batch, what the sinks build per reading from the chain's output: the PostgreSQL COPY rows
(sinks/postgres.copy_rows), the Redis stream entries (sinks/redis_wire.xadd_entries) and the latest values
(sinks/redis_stream.latest_per_sensor); printed as `chain_and_sinks_us_per_message` beside the chain's own figure.
CPU time of the thread (time.thread_time), so other processes on the box distort it less than wall time.

`--dialect` sends the same readings as a device family writes them, through a mapping (config `sources:`,
docs/formats.md): `tasmota` (tele/<id>/SENSOR, {"Time": ISO local time, "BME280": {...}}, the unit in a sibling
field) or `zigbee2mqtt` (zigbee2mqtt/<friendly name>, a flat object with a housekeeping field excluded).
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time
from pathlib import Path

import msgspec
import orjson
from prometheus_client import CollectorRegistry

from ...config import load, parse
from ...observability.metrics import Metrics
from ...records import RawMessage
from ...runtime.chain import StageChain
from ...app.build import build_stages
from ...sinks import postgres, redis_stream, redis_wire

ROOT = Path(__file__).resolve().parents[3]
SENSORS = 100
METRICS = ("temperature", "humidity", "pressure")
DIALECTS = {
    "tasmota": {"name": "tasmota", "topic": "tele/{sensor_id}/SENSOR", "readings": ["BME280.*"],
                "timestamp": {"path": "Time"}, "unit": {"path": "TempUnit", "metrics": ["temperature"]}},
    "zigbee2mqtt": {"name": "zigbee2mqtt", "topic": "zigbee2mqtt/{sensor_id+}", "exclude": ["linkquality"]},
}


def dialect_messages(dialect: str, n: int, readings: int, now: float) -> list[RawMessage]:
    """As `messages`, written in a device family's own dialect."""
    out = []
    for i in range(n):
        sid = f"sensor-{i % SENSORS:03d}"
        values = {m.capitalize(): 20.0 + (i + k) % 7 for k, m in enumerate(METRICS[:readings])}
        if dialect == "tasmota":
            t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - 1.0 + i * 0.001))
            body, topic = {"Time": t, "BME280": values, "TempUnit": "C"}, f"tele/{sid}/SENSOR"
        else:
            body, topic = {**{k.lower(): v for k, v in values.items()}, "linkquality": 96}, f"zigbee2mqtt/{sid}"
        out.append(RawMessage(topic, orjson.dumps(body), now, sid.encode(), "raw", i % 6, i))
    return out


def messages(n: int, readings: int, now: float) -> list[RawMessage]:
    """`n` messages of `readings` readings each, round robin over the sensors, event times a few ms apart."""
    out = []
    for i in range(n):
        sid = f"sensor-{i % SENSORS:03d}"
        ts = now - 1.0 + i * 0.001
        if readings == 1:
            body = {"metric": "temperature", "value": 20.0 + i % 7, "timestamp": ts}
        else:
            body = {"readings": {m: 20.0 + (i + k) % 7 for k, m in enumerate(METRICS[:readings])}, "timestamp": ts,
                    "type": "sensor", "location": "hall"}
        out.append(RawMessage(f"sensors/{sid}", orjson.dumps(body), now, sid.encode(), "raw", i % 6, i))
    return out


def runner(chain: StageChain):
    """The chain's batch entry point, or per message as the Kafka source called it before there was one."""
    if hasattr(chain, "run_batch"):
        def batch(raws):
            out, dead = chain.run_batch(raws)
            chain.flush_counts()
            return out, dead
        return batch

    def per_message(raws):
        out: list = []
        dead: list = []
        run = chain.run
        for raw in raws:
            run(raw, out, dead)
        chain.flush_counts()
        return out, dead
    return per_message


def sink_rows(head: str):
    """What the sinks build from a batch's readings, without writing it."""
    def build(readings: list) -> None:
        postgres.copy_rows(readings)
        redis_wire.xadd_entries(head, readings)
        redis_stream.latest_per_sensor(readings)
    return build


def measure(readings: int, n: int, batches: int, samples: int, dialect: str = "native",
            sinks: bool = False) -> tuple[float, list[float]]:
    """Median µs per message over `samples` samples of `batches` batches, and the samples."""
    settings = load(ROOT / "config.yaml", env={})
    if dialect != "native":
        config = msgspec.structs.replace(settings.config, sources=parse({"sources": [DIALECTS[dialect]]}).sources)
        settings = msgspec.structs.replace(settings, config=config)
    chain = StageChain(build_stages(settings), Metrics(CollectorRegistry()))
    run = runner(chain)
    build = sink_rows(redis_wire.xadd_head("readings", 100_000)) if sinks else None
    now = time.time()
    raws = messages(n, readings, now) if dialect == "native" else dialect_messages(dialect, n, readings, now)
    out, dead = run(raws)  # warm: every sensor and metric known to the limits filter
    if dead or len(out) != n * readings:
        raise SystemExit(f"setup: {len(out)} records out, {len(dead)} dead letters ({dead[:1]})")
    figures = []
    clock = time.thread_time if sinks else time.perf_counter
    for _ in range(samples):
        gc.collect()
        start = clock()
        for _ in range(batches):
            out, _ = run(raws)
            if build is not None:
                build(out)
        figures.append((clock() - start) / (batches * n) * 1e6)
    return statistics.median(figures), figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=500, help="messages per batch")
    p.add_argument("--batches", type=int, default=200, help="batches per sample")
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--dialect", choices=("native", *DIALECTS), default="native",
                   help="the payloads' dialect: the pipeline's own JSON, or a device family's through a mapping")
    p.add_argument("--sinks", action="store_true",
                   help="also build the sinks' COPY rows, Redis entries and latest values (CPU time of the thread)")
    args = p.parse_args()
    for readings in (1, 3):
        median, figures = measure(readings, args.messages, args.batches, args.samples, args.dialect)
        line = (f"dialect={args.dialect} readings_per_message={readings} messages_per_batch={args.messages} "
                f"us_per_message={median:.2f} us_per_reading={median / readings:.2f} "
                f"samples={','.join(f'{f:.2f}' for f in figures)}")
        if args.sinks:
            total, _ = measure(readings, args.messages, args.batches, args.samples, args.dialect, sinks=True)
            line += f" chain_and_sinks_us_per_message={total:.2f}"
        print(line)


if __name__ == "__main__":
    main()
