"""Memory per active series, its release after limits.state_idle_s, and the offline timer's tick cost.

    python -m pipeline.tools.bench.state_memory [--sensors 5000] [--readings 40] [--interval 30]

In-process, no services: the real limits registry, alert evaluator (config.yaml's detectors) and window
aggregator (config.yaml's periods; its database and Redis calls replaced by no-ops, the window bookkeeping
is real) are fed `--sensors` sensors x the metrics below, `--readings` readings per series `--interval`
seconds apart, on an injected clock. tracemalloc measures what stays allocated per series; then the clock
moves past state_idle_s, every owner's `evict_idle` runs, and what is left is measured again.

Last, the offline timer: the tick time with 100,000 one-shot sensors (seen once, offline after the limit),
the previous tick's loop (every sensor ever seen, on every tick; reproduced below) against the heap's.
"""
from __future__ import annotations

import argparse
import gc
import msgspec
import sys
import time
import tracemalloc
from pathlib import Path

from prometheus_client import CollectorRegistry

from ...app.build import alert_sections
from ...config import Secret, load
from ...config.metric_rules import Bounds, ThresholdRule
from ...observability.metrics import Metrics
from ...operators.alerts.detectors import offline
from ...operators.alerts.evaluator import AlertEvaluator
from ...stages.limits import LimitFilter
from ...operators.windows.aggregator import WindowAggregator
from ...records import Reading

ROOT = Path(__file__).resolve().parents[3]
# Three metrics with config.yaml's rate/outlier/stuck detectors and thresholds, one with a threshold and stuck; values
# inside their bounds, so no alert opens while they report.
METRICS = {"temperature": 20.0, "humidity": 50.0, "pressure": 1000.0, "cpu_percent": 30.0}
THRESHOLD_ONLY = {"voltage": 230.0, "current": 5.0}
T0 = 1_760_000_000.0


class NoCursor:
    def execute(self, *_args, **_kwargs) -> None:
        pass


def build(clock, metrics: dict[str, float], offline: bool = True):
    cfg = load(ROOT / "config.yaml", env={}).config
    # Thresholds for the threshold-only metrics (config.yaml has none for them).
    extra = {m: ThresholdRule(warning=Bounds(min=0.5 * v, max=3 * v)) for m, v in THRESHOLD_ONLY.items()}
    cfg = msgspec.structs.replace(cfg, thresholds={**cfg.thresholds, **extra})
    if not offline:
        cfg = msgspec.structs.replace(cfg, detection=msgspec.structs.replace(cfg.detection, offline_after_s=0.0))
    limits = LimitFilter(cfg.limits.max_sensors, cfg.limits.max_metrics_per_sensor, "open", cfg.limits.state_idle_s, clock)
    limits.registry.clock = clock
    evaluator = AlertEvaluator(alert_sections(cfg).evaluator)
    agg = WindowAggregator(cfg.aggregation, cfg.redis, Secret(""), Metrics(CollectorRegistry()), clock=clock,
                           state_idle_s=cfg.limits.state_idle_s)
    agg.store.publish_partials = lambda fields, now: None  # Redis: not measured here
    agg.store.close = lambda statements: []  # PostgreSQL: the closing statements are not run
    return cfg, limits, evaluator, agg


def feed(limits, evaluator, agg, sensors: int, metrics: dict[str, float], step: int, now: float) -> None:
    """One reading of every series at `now` (event time and wall clock), through the three owners in daemon order."""
    batch = []
    for s in range(sensors):
        sid = f"sensor-{s:06d}"
        for metric, base in metrics.items():
            value = base + (s % 7) * 0.5 + (step % 5) * 0.1
            batch.extend(limits.process(Reading(sid, "sensor", "hall", metric, value, now, now)))
    for i in range(0, len(batch), 1000):
        chunk = batch[i:i + 1000]
        inserted = [(r.sensor_id, r.metric, r.value, round(r.ts * 1_000_000)) for r in chunk]
        staged = agg.stage(NoCursor(), chunk, inserted)
        agg.committed(chunk, inserted, staged)
        evaluator.evaluate(chunk, now)
    agg.close_due()
    evaluator.tick(now)


OWNERS = {"operators/windows/": "windows", "operators/alerts/": "alerts", "stages/limits.py": "limits"}


def held(base: tracemalloc.Snapshot) -> dict[str, int]:
    """Bytes allocated since `base` and still held, by the owner that allocated them (`other`: the readings'
    values and ids, kept as references by the owners' state)."""
    gc.collect()
    out = dict.fromkeys([*OWNERS.values(), "other"], 0)
    for stat in tracemalloc.take_snapshot().compare_to(base, "filename"):
        name = next((o for path, o in OWNERS.items() if path in stat.traceback[0].filename), "other")
        out[name] += stat.size_diff
    return out


def memory(sensors: int, readings: int, interval: float, metrics: dict[str, float], offline: bool = True) -> dict:
    now = [T0]
    cfg, limits, evaluator, agg = build(lambda: now[0], metrics, offline)
    tracemalloc.start()
    gc.collect()
    base = tracemalloc.take_snapshot()
    for step in range(readings):
        now[0] = T0 + step * interval
        feed(limits, evaluator, agg, sensors, metrics, step, now[0])
    # The sensors touched since the last Redis publish are handed over once a second: not state that stays.
    agg.flush_partials(now[0] + 2)
    active = held(base)
    # Silence: past state_idle_s (and past the offline limit, so the timer fires first), then the owners' sweeps
    # as their runners' ticks call them.
    now[0] += cfg.limits.state_idle_s + 1
    evaluator.tick(now[0])
    open_alerts = len(evaluator.book.open)
    evaluator.evict_idle(now[0])
    agg.close_due()
    agg.evict_idle(now[0])
    limits.evict_idle(now[0])
    after = held(base)
    tracemalloc.stop()
    return {"series": sensors * len(metrics), "active": active, "after": after, "open_alerts": open_alerts,
            "left": {"partials": len(agg.partials.acc), "pending windows": agg.tracker.pending_count(),
                     "registry": len(limits.registry), "series in the evaluator": len(evaluator.series)}}


def report(title: str, m: dict, sensors: int) -> None:
    series = m["series"]
    total = sum(m["active"].values())
    print(f"{title}: {series} series, {total / series:.0f} bytes per active series ("
          + ", ".join(f"{k} {v / series:.0f}" for k, v in m["active"].items()) + ")")
    after = sum(m["after"].values())
    print(f"  after state_idle_s: {after / series:.0f} bytes per series above the baseline ({after} in all; "
          f"{m['open_alerts']} open alerts kept, {after / max(1, m['open_alerts']):.0f} bytes each); left: "
          + ", ".join(f"{k} {v}" for k, v in m["left"].items()))


def legacy_tick(evaluator: AlertEvaluator, last_seen: dict[str, float], now: float) -> None:
    """The tick before the heap (the previous AlertEvaluator.tick, verbatim): every sensor ever seen, each tick."""
    out: list = []
    rules = evaluator.rules
    for sensor_id, seen in last_seen.items():
        limit = rules.offline_after(sensor_id)
        if limit > 0:
            signal = offline(now - seen, limit, evaluator.offline_severity)
            if signal.severity is not None:
                info = evaluator.sensor_info.get(sensor_id, ("sensor", None))
                evaluator._add(out, evaluator.book.observe(sensor_id, None, "offline", signal, now), *info)
    for t in evaluator.book.due(now):
        evaluator._add(out, t)


def offline_ticks(n: int = 100_000, ticks: int = 5) -> dict:
    cfg = load(ROOT / "config.yaml", env={}).config
    limit = cfg.detection.offline_after_s
    readings = [Reading(f"once-{i:06d}", "sensor", None, "temperature", 20.0, T0, T0) for i in range(n)]
    out = {}
    for name in ("before", "after"):
        ev = AlertEvaluator(alert_sections(cfg).evaluator)
        ev.evaluate(readings, 0.0)
        seen = dict(ev.last_seen)
        times = []
        for k in range(ticks):
            now = limit + 1.0 + k * cfg.processing.interval_s
            t = time.perf_counter()
            if name == "before":
                legacy_tick(ev, seen, now)
            else:
                ev.tick(now)
            times.append(time.perf_counter() - t)
        out[name] = times
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sensors", type=int, default=5000)
    ap.add_argument("--readings", type=int, default=40, help="readings per series")
    ap.add_argument("--interval", type=float, default=30.0, help="seconds between a series' readings")
    args = ap.parse_args(argv)
    print(f"{args.sensors} sensors, {args.readings} readings per series every {args.interval:g} s, config.yaml "
          "(periods 1m/5m/1h, state_idle_s 86400)")
    report("mixed (temperature, humidity, pressure: thresholds, rate, outlier, stuck; cpu_percent: threshold, stuck)",
           memory(args.sensors, args.readings, args.interval, METRICS), args.sensors)
    report("threshold only (voltage, current: a threshold, no other detector), offline_after_s 0",
           memory(args.sensors, args.readings, args.interval, THRESHOLD_ONLY, offline=False), args.sensors)
    t = offline_ticks()
    for name in ("before", "after"):
        print(f"offline tick, 100,000 one-shot sensors, {name}: " + ", ".join(f"{x * 1000:.2f}" for x in t[name]) + " ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
