"""The alert evaluator's cost per reading, in-process: config.yaml's rules, no services.

    python -m pipeline.tools.bench.alerts_cost [--sensors 1000] [--messages 500] [--rounds 60] [--samples 5]
                                               [--baseline /path/to/other/checkout] [--profile]

A steady fleet (`--sensors`, one message a second each, round robin) is judged in batches of `--messages`
messages, one reading per message (temperature) and then three (temperature, humidity, pressure), as the
alert operator gets them from the Kafka source. Values are a level plus gaussian noise at two decimals, so the
detectors' history is that of a healthy fleet: warmed up first (rate windows full, outlier statistics past
min_samples), then `--rounds` rounds of the fleet are timed (time.thread_time around each `evaluate`, the
readings built outside it; CPU time of the thread, so other processes on the machine count less). The figure
is µs per reading, the median of `--samples` samples.

`--baseline DIR` times the evaluator of another checkout too (each sample in a child process with
PYTHONPATH=DIR, alternating with this checkout's), so before and after come from one run under the same load.
`--profile` prints cProfile's top functions for this checkout instead.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
METRICS = (("temperature", 21.0, 0.1), ("humidity", 45.0, 0.5), ("pressure", 1013.0, 0.2))
WARM_ROUNDS = 90  # readings per series before timing: the rate window (60 s) and the outlier's 30 samples


def evaluator():
    # Absolute imports: this file also runs as a script against another checkout (--baseline).
    from pipeline.app.build import alert_sections
    from pipeline.config import load
    from pipeline.operators.alerts.evaluator import AlertEvaluator
    return AlertEvaluator(alert_sections(load(ROOT / "config.yaml", env={}).config).evaluator)


def batches(sensors: int, messages: int, readings: int, rounds: int, t0: float):
    """Lists of readings, `messages` messages at a time, for `rounds` rounds of the fleet (one message a
    second per sensor)."""
    from pipeline.records import Reading
    rng = random.Random(7)
    gauss = rng.gauss
    levels = [[base + rng.uniform(-2, 2) * sd * 10 for _, base, sd in METRICS] for _ in range(sensors)]
    metrics = METRICS[:readings]
    batch: list = []
    n = 0
    for rnd in range(rounds):
        for s in range(sensors):
            ts = t0 + rnd + s / sensors
            sid = f"sensor-{s:05d}"
            lv = levels[s]
            for k, (metric, _base, sd) in enumerate(metrics):
                batch.append(Reading(sid, "sensor", "hall", metric, round(lv[k] + gauss(0.0, sd), 2), ts, ts))
            n += 1
            if n == messages:
                yield batch
                batch, n = [], 0
    if batch:
        yield batch


def measure(sensors: int, messages: int, readings: int, rounds: int) -> tuple[float, int]:
    """µs per reading over `rounds` timed rounds after the warm-up, and the transitions they produced."""
    ev = evaluator()
    t0 = 1_760_000_000.0
    for batch in batches(sensors, messages, readings, WARM_ROUNDS, t0):
        ev.evaluate(batch, batch[-1].ts)
    gc.collect()
    spent, n, transitions = 0.0, 0, 0
    clock = time.thread_time
    for batch in batches(sensors, messages, readings, rounds, t0 + WARM_ROUNDS):
        now = batch[-1].ts
        start = clock()
        out = ev.evaluate(batch, now)
        spent += clock() - start
        n += len(batch)
        transitions += len(out)
    return spent / n * 1e6, transitions


def child(args) -> None:
    us, transitions = measure(args.sensors, args.messages, args.readings, args.rounds)
    print(json.dumps({"us": us, "transitions": transitions}))


def run_child(checkout: Path, args, readings: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--readings", str(readings),
           "--sensors", str(args.sensors), "--messages", str(args.messages), "--rounds", str(args.rounds)]
    done = subprocess.run(cmd, env=env, cwd=checkout, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def profile(args) -> None:
    import cProfile
    import pstats
    for readings in (1, 3):
        print(f"--- {readings} reading(s) per message")
        prof = cProfile.Profile()
        prof.runcall(measure, args.sensors, args.messages, readings, args.rounds)
        pstats.Stats(prof).sort_stats("tottime").print_stats(14)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sensors", type=int, default=1000)
    p.add_argument("--messages", type=int, default=500, help="messages per batch")
    p.add_argument("--rounds", type=int, default=60, help="timed rounds of the fleet")
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--readings", type=int, default=0, help="one figure: readings per message (1 or 3)")
    p.add_argument("--baseline", type=Path, help="another checkout to time alternately with this one")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    if args.profile:
        return profile(args)
    here = ROOT
    checkouts = [("before", args.baseline.resolve()), ("after", here)] if args.baseline else [("this", here)]
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for readings in ((args.readings,) if args.readings else (1, 3)):
        figures: dict[str, list[float]] = {name: [] for name, _ in checkouts}
        trans: dict[str, int] = {}
        for _ in range(args.samples):
            for name, checkout in checkouts:  # alternated: both see the same load
                r = run_child(checkout, args, readings)
                figures[name].append(r["us"])
                trans[name] = r["transitions"]
        for name, _ in checkouts:
            f = figures[name]
            print(f"readings/message={readings} {name:6s} {statistics.median(f):6.2f} µs/reading "
                  f"(samples {' '.join(f'{x:.2f}' for x in f)}; transitions {trans[name]})")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
