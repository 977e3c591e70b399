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
import sys
import time
import tracemalloc
from pathlib import Path

from prometheus_client import CollectorRegistry

from ...config import Secret, load
from ...observability.metrics import Metrics
from ...operators.alerts.detectors import offline
from ...operators.alerts.evaluator import AlertEvaluator
from ...operators.limits.registry import LimitFilter
from ...operators.windows.aggregator import WindowAggregator
from ...records import Reading

ROOT = Path(__file__).resolve().parents[3]
# Three metrics with config.yaml's rate/outlier/stuck detectors and thresholds, one with a threshold and stuck; values
# inside their bounds, so no alert opens while they report.
METRICS = {"temperature": 20.0, "humidity": 50.0, "pressure": 1000.0, "cpu_percent": 30.0}
T0 = 1_760_000_000.0


class NoCursor:
    def execute(self, *_args, **_kwargs) -> None:
        pass


def build(clock):
    cfg = load(ROOT / "config.yaml", env={}).config
    limits = LimitFilter(cfg.limits.max_sensors, cfg.limits.max_metrics_per_sensor, cfg.limits.state_idle_s, clock)
    evaluator = AlertEvaluator(cfg)
    agg = WindowAggregator(cfg.aggregation, cfg.redis, Secret(""), Metrics(CollectorRegistry()), clock=clock,
                           state_idle_s=cfg.limits.state_idle_s)
    agg.store.publish_partials = lambda fields: None  # Redis: not measured here
    agg.store.close = lambda statements: []  # PostgreSQL: the closing statements are not run
    return cfg, limits, evaluator, agg


def feed(limits, evaluator, agg, sensors: int, step: int, now: float) -> None:
    """One reading of every series at `now` (event time and wall clock), through the three owners in daemon order."""
    batch = []
    for s in range(sensors):
        sid = f"sensor-{s:06d}"
        for metric, base in METRICS.items():
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


def measured() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def memory(sensors: int, readings: int, interval: float) -> dict:
    now = [T0]
    cfg, limits, evaluator, agg = build(lambda: now[0])
    tracemalloc.start()
    base = measured()
    for step in range(readings):
        now[0] = T0 + step * interval
        feed(limits, evaluator, agg, sensors, step, now[0])
    active = measured()
    series = sensors * len(METRICS)
    # Silence: past state_idle_s (and past the offline limit, so the timer fires first), then the owners' sweeps.
    now[0] += cfg.limits.state_idle_s + 1
    evaluator.tick(now[0])
    open_offline = len(evaluator.book.open)
    evaluator.evict_idle(now[0])
    agg.close_due()
    agg.evict_idle(now[0])
    limits.registry.evict_idle(now[0], cfg.limits.state_idle_s)
    after = measured()
    tracemalloc.stop()
    return {"series": series, "base": base, "active": active, "after": after, "open_offline": open_offline,
            "per_series": (active - base) / series, "left_per_sensor": (after - base) / sensors,
            "partials": len(agg.partials.acc), "registry": len(limits.registry), "rules": len(evaluator.rules._cache)}


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
        ev = AlertEvaluator(cfg)
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
    m = memory(args.sensors, args.readings, args.interval)
    print(f"series: {m['series']} ({args.sensors} sensors x {len(METRICS)} metrics), {args.readings} readings each, "
          f"every {args.interval:g} s")
    print(f"memory per active series: {m['per_series']:.0f} bytes (tracemalloc, {m['active'] - m['base']} bytes in all)")
    print(f"after state_idle_s: {m['after'] - m['base']} bytes above the baseline ({m['left_per_sensor']:.0f} bytes per "
          f"sensor: its open offline alert, {m['open_offline']} open); partials {m['partials']}, registry "
          f"{m['registry']}, rules cache {m['rules']}")
    t = offline_ticks()
    for name in ("before", "after"):
        print(f"offline tick, 100,000 one-shot sensors, {name}: " + ", ".join(f"{x * 1000:.1f}" for x in t[name]) + " ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
