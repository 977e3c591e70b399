"""`make bench`: every ratio the benchmark is judged by, measured in one run on one machine, and checked.

    python -m pipeline.tools.bench --suite [--rate 10000] [--duration 60] [--fresh-broker] [--json]

In order, each level on new topics with a fresh daemon (with --fresh-broker, on a broker started empty for it:
the development broker slows as it holds more, see broker.py; each level's `broker` says which):
1. the headline rate (`--rate`), one reading per message; the daemon's consuming half and the peer through the
   headline's topic (peer ratio); the bare path at the same rate (overhead ratio);
2. the same rate with three readings per message (cost of readings against messages);
3. the rate stepped up by `--step` (levels of `--max-duration` s) to the highest sustainable one;
4. 60 % of that rate: latency to Redis and to the PostgreSQL commit;
5. 1,000 msg/s, the rate most deployments run at: CPU per message against the figure at the highest rate;
6. the daemon idle.
Targets are ratios, so they hold on any machine; the absolute figures are reported beside them.
"""
from __future__ import annotations

import json
import time

from . import ratios
from .report import ratio_lines, sustainable, table

LOW_RATE = 1000.0

# name -> (what it measures, the largest value that meets the target): the performance issue's bounds.
TARGETS = {
    "overhead_ratio": ("daemon CPU per message / the bare path's, at the headline rate", 1.2),
    "peer_ratio": ("daemon CPU per message / the peer's, consuming half, same data", 0.4),
    "readings3_ratio": ("CPU per message with 3 readings / with 1, at the headline rate", 1.3),
    "readings3_shortfall": ("3 readings per message: share of the headline rate not sustained (0: held)", 0.0),
    "p99_redis_ms_at_headline": ("p99 publish -> Redis at the headline rate (ms)", 100.0),
    "p99_pg_ms_at_headline": ("p99 publish -> PostgreSQL commit at the headline rate (ms)", 1000.0),
    "p99_redis_ms_at_60pct": ("p99 publish -> Redis at 60 % of the highest sustainable rate (ms)", 60.0),
    "low_rate_ratio": ("CPU per message at 1,000 msg/s / at the highest sustainable rate", 2.0),
    "idle_cores": ("the idle daemon's CPU (cores)", 0.02),
    "lost_or_duplicated": ("readings lost or doubled, every daemon level together", 0),
}


def idle_cores(bench, seconds: float = 30.0, settle_s: float = 5.0) -> float:
    """A fresh daemon with nothing to do: cores it uses, after `settle_s` of start-up."""
    bench.start_daemon()
    time.sleep(settle_s)
    cpu0, _ = bench.daemon_stats()
    t0 = time.monotonic()
    time.sleep(seconds)
    cpu1, _ = bench.daemon_stats()
    bench.stop_daemon()
    return round((cpu1 - cpu0) / (time.monotonic() - t0), 4)


def highest_sustainable(bench, args, headline: dict) -> tuple[list[dict], dict | None]:
    """Step up from the headline rate while levels are sustainable (down, if the headline was not)."""
    steps: list[dict] = []
    up = sustainable(headline)
    rate = headline["offered_rate"]
    best = headline if up else None
    while True:
        rate = round(rate * args.step if up else rate / args.step, -2)
        if rate > args.max_rate or rate < LOW_RATE:
            return steps, best
        bench.log(f"stepping {'up' if up else 'down'}: {rate:,.0f} msg/s for {args.max_duration:.0f} s")
        r = bench.run(rate, readings=1, duration=args.max_duration)
        steps.append(r)
        if sustainable(r):
            best = r
            if not up:
                return steps, best
        elif up:
            return steps, best


def run(bench, args) -> dict:
    """The whole suite; returns the report (levels, figures, targets)."""
    report: dict = {"machine": ratios.machine(), "broker_limit_rate": round(bench.broker_limit(), 1)}
    rate = args.rate
    bench.log(f"headline: {rate:,.0f} msg/s, one reading per message, {args.duration:.0f} s")
    one = bench.run(rate, readings=1)
    report["headline"] = one
    report.update(ratios.measure(bench, args, one))
    bench.log(f"three readings per message at {rate:,.0f} msg/s")
    three = bench.run(rate, readings=3)
    report["three_readings"] = three
    steps, best = highest_sustainable(bench, args, one)
    report["steps"], report["max_sustainable_rate"] = steps, best["offered_rate"] if best else None
    levels = [one, three, *steps]
    if best:
        at60_rate = round(0.6 * best["offered_rate"], -2)
        bench.log(f"60 % of the highest sustainable rate: {at60_rate:,.0f} msg/s")
        report["at_60pct"] = at60 = bench.run(at60_rate, readings=1)
        levels.append(at60)
    bench.log(f"{LOW_RATE:,.0f} msg/s")
    report["low_rate"] = low = bench.run(LOW_RATE, readings=1)
    levels.append(low)
    bench.log("idle")
    report["idle_cores"] = idle_cores(bench)
    report["idle_broker"] = bench.broker_state
    if report.get("floor"):
        levels.append(report["floor"])
    for r in levels:
        if report.get("floor_cpu_s_per_million"):
            r["overhead_ratio"] = round(r["cpu_s_per_million"] / report["floor_cpu_s_per_million"], 3)
    report["figures"] = figures(report, one, three, best, levels)
    report["targets"] = {name: judge(name, value) for name, value in report["figures"].items() if name in TARGETS}
    return report


def figures(report: dict, one: dict, three: dict, best: dict | None, levels: list[dict]) -> dict:
    at60, low, peer = report.get("at_60pct"), report["low_rate"], report.get("peer") or {}
    ratio = lambda a, b: round(a / b, 3) if a and b else None  # noqa: E731
    return {
        "overhead_ratio": ratio(one["cpu_s_per_million"], report.get("floor_cpu_s_per_million")),
        "peer_ratio": peer.get("ratio"),
        "readings3_ratio": ratio(three["cpu_s_per_million"], one["cpu_s_per_million"]),
        "readings3_shortfall": 0.0 if sustainable(three) else round(1 - three["sustained_rate"] / three["offered_rate"], 3),
        "p99_redis_ms_at_headline": one["latency_ms"]["redis"]["p99"],
        "p99_pg_ms_at_headline": one["latency_ms"]["pg"]["p99"],
        "p99_redis_ms_at_60pct": at60["latency_ms"]["redis"]["p99"] if at60 else None,
        "p99_pg_ms_at_60pct": at60["latency_ms"]["pg"]["p99"] if at60 else None,
        "low_rate_ratio": ratio(low["cpu_s_per_million"], best["cpu_s_per_million"] if best else None),
        "idle_cores": report["idle_cores"],
        # The pipeline's promise: the daemon's levels. The bare path (floor.py, QoS 0, no retries) is only the
        # yardstick of CPU per message; on a box that cannot carry the headline rate it drops, said beside.
        "lost_or_duplicated": sum(r["lost"] + r["duplicated"] for r in levels if r["path"] == "daemon"),
        "floor_lost": sum(r["lost"] for r in levels if r["path"] != "daemon"),
        # Beside the ratios: the absolute figures they were made of.
        "cpu_s_per_million_headline": one["cpu_s_per_million"],
        "cpu_s_per_million_three_readings": three["cpu_s_per_million"],
        "cpu_s_per_million_at_max": best["cpu_s_per_million"] if best else None,
        "cpu_s_per_million_at_1000": low["cpu_s_per_million"],
        "floor_cpu_s_per_million": report.get("floor_cpu_s_per_million"),
        "peer_cpu_s_per_million": peer.get("cpu_s_per_million"),
        "daemon_consuming_half_cpu_s_per_million": peer.get("daemon_cpu_s_per_million"),
    }


def judge(name: str, value) -> dict:
    what, bound = TARGETS[name]
    met = None if value is None else value <= bound
    return {"what": what, "value": value, "bound": bound, "met": met}


def lines(report: dict) -> list[str]:
    out = [f"{'target':<24} {'value':>10} {'bound':>8}  met  what"]
    for name, t in report["targets"].items():
        value = "-" if t["value"] is None else f"{t['value']:g}"
        met = "-" if t["met"] is None else ("yes" if t["met"] else "NO")
        out.append(f"{name:<24} {value:>10} {t['bound']:>8g}  {met:<4} {t['what']}")
    f = report["figures"]
    out.append("absolute figures (CPU-s per million messages): " + ", ".join(
        f"{k.removesuffix('_cpu_s_per_million').removeprefix('cpu_s_per_million_')} {v}"
        for k, v in f.items() if "cpu_s_per_million" in k and v is not None))
    out.append(f"highest sustainable rate: {report['max_sustainable_rate']} msg/s; broker limit (mosquitto C clients, "
               f"QoS 0): {report['broker_limit_rate']:,.0f} msg/s; idle daemon {report['idle_cores']:.3f} cores "
               f"({report.get('idle_broker')})")
    return out


def main(bench, args) -> int:
    """--suite: run it all, print the report (text or --json); exit 1 if anything was lost or doubled."""
    args.floor, args.peer = True, args.peer or "quix"
    try:
        bench.start()
        report = run(bench, args)
    finally:
        bench.stop()
    print(json.dumps(report) if args.json else render(report))
    return 0 if report["figures"]["lost_or_duplicated"] == 0 else 1


def render(report: dict) -> str:
    """The suite's report as text: every level, the ratios with their figures, the targets."""
    levels = [report["headline"], *([report["floor"]] if report.get("floor") else []), report["three_readings"],
              *report["steps"], *(report[k] for k in ("at_60pct", "low_rate") if report.get(k))]
    return "\n".join([table(levels, report["broker_limit_rate"]),
                      *ratio_lines({**report["headline"], **report}), *lines(report)])
