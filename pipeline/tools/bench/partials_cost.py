"""The dashboard's running values (windows/partials.py) per stored reading, in-process, no services.

    python -m pipeline.tools.bench.partials_cost [--sensors 1000] [--per-minute 20] [--minutes 5] [--batch 1000]
                                                 [--samples 7] [--baseline /path/to/other/checkout]

A live fleet: `--sensors` sensors, each storing its three metrics together `--per-minute` times a minute of event
time, staggered, in the PostgreSQL sink's batches of `--batch` readings (the rows its RETURNING gives the window
operator: sensor_id, metric, value, event time in µs), config.yaml's default periods 1m, 5m, 1h, 1d. Once as
they come, once with 5 % of the readings late (30 to 120 s behind). The first minute (every series made) is not
timed; then every batch is fed to `Partials` as `WindowAggregator._committed` feeds it (time.thread_time around
each call: CPU time of the thread, so other processes on the box count less). The figure is µs per reading, the
median of `--samples` samples; beside it, µs per series of what the publishing thread does once a second per
touched series (`copies` and `encode`; the median of PASSES passes over every series, at the end of a sample).

`--baseline DIR` times another checkout too (each sample in a child process with PYTHONPATH=DIR, alternating with
this checkout's), so before and after come from one run under the same load.
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
METRICS = ("temperature", "humidity", "pressure")
PERIODS = ("1m", "5m", "1h", "1d")
US = 1_000_000
PASSES = 5  # of copies + encode over every series, at the end of a sample (one takes a few ms)


def stream(sensors: int, per_minute: int, minutes: int, batch: int, late: float, t0: int):
    """Batches of (sensor_id, metric, value, ts µs) in event-time order; a `late` share of readings moved back."""
    rng = random.Random(7)
    every = 60 * US // per_minute
    ids = [f"sensor-{s:05d}" for s in range(sensors)]
    out: list = []
    for rnd in range(minutes * per_minute):
        for s, sensor_id in enumerate(ids):
            ts = t0 + rnd * every + s * every // sensors
            for metric in METRICS:
                t = ts - rng.randint(30, 120) * US if rng.random() < late else ts
                out.append((sensor_id, metric, round(rng.gauss(20.0, 2.0), 2), t))
            if len(out) >= batch:
                yield out
                out = []
    if out:
        yield out


def feeder(partials):
    """How the window operator hands a batch over: `add_rows`, or one `add` a reading before there was one."""
    if hasattr(partials, "add_rows"):
        return partials.add_rows

    def per_reading(rows, now):
        add = partials.add
        for sensor_id, metric, value, ts in rows:
            add(sensor_id, metric, ts, value, now)
    return per_reading


def measure(sensors: int, per_minute: int, minutes: int, batch: int, late: float) -> dict:
    """µs per reading over the timed minutes, and µs per series of copies + encode at the end."""
    # Absolute imports: this file also runs as a script against another checkout (--baseline).
    from pipeline.operators.windows.partials import Partials
    from pipeline.operators.windows.tracker import WindowTracker
    partials = Partials(WindowTracker(PERIODS, grace_s=10, idle_close_s=60))
    feed = feeder(partials)
    t0 = 1_760_000_400 * US  # a multiple of an hour
    batches = list(stream(sensors, per_minute, minutes + 1, batch, late, t0))
    warm = len(batches) // (minutes + 1)
    for rows in batches[:warm]:
        feed(rows, 0.0)
    gc.collect()
    clock = time.thread_time
    spent, n = 0.0, 0
    for i, rows in enumerate(batches[warm:]):
        start = clock()
        feed(rows, float(i))
        spent += clock() - start
        n += len(rows)
    ids = [f"sensor-{s:05d}" for s in range(sensors)]
    passes = []
    for _ in range(PASSES):
        start = clock()
        for sensor_id in ids:
            partials.encode(partials.copies(sensor_id, METRICS))
        passes.append((clock() - start) / (sensors * len(METRICS)) * 1e6)
    return {"us": spent / n * 1e6, "copies_us": statistics.median(passes)}


def run_child(checkout: Path, args, late: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--late", str(late), "--sensors",
           str(args.sensors), "--per-minute", str(args.per_minute), "--minutes", str(args.minutes), "--batch",
           str(args.batch)]
    done = subprocess.run(cmd, env=env, cwd=checkout, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sensors", type=int, default=1000)
    p.add_argument("--per-minute", type=int, default=20, help="readings per series per minute of event time")
    p.add_argument("--minutes", type=int, default=5, help="minutes of event time timed")
    p.add_argument("--batch", type=int, default=1000, help="readings per batch")
    p.add_argument("--samples", type=int, default=7)
    p.add_argument("--late", type=float, default=-1.0, help="one figure: this share of readings late")
    p.add_argument("--baseline", type=Path, help="another checkout to time alternately with this one")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.sensors, args.per_minute, args.minutes, args.batch, args.late)))
        return
    checkouts = [("before", args.baseline.resolve()), ("after", ROOT)] if args.baseline else [("this", ROOT)]
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for late in ((args.late,) if args.late >= 0 else (0.0, 0.05)):
        figures: dict[str, list[dict]] = {name: [] for name, _ in checkouts}
        for _ in range(args.samples):
            for name, checkout in checkouts:  # alternated: both see the same load
                figures[name].append(run_child(checkout, args, late))
        for name, _ in checkouts:
            us = [f["us"] for f in figures[name]]
            copies = statistics.median(f["copies_us"] for f in figures[name])
            print(f"late={late:.2f} {name:6s} {statistics.median(us):5.2f} µs/reading (samples "
                  f"{' '.join(f'{x:.2f}' for x in us)}); copies+encode {copies:.2f} µs/series")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
