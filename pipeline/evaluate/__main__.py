"""Alert evaluation against ground truth: the simulator's labelled anomalies through the real daemon.

python -m pipeline.evaluate [--sensors 20 --hours 3 --anomalies 1] [--realtime-s 240] [--normal] [--json]

Two parts, each on a daemon of its own (own database, topics, key prefix; removed afterwards):
  replay     `--sensors` sensors reporting once a second for `--hours` of simulated time, stamped in the
             recent past and published as fast as `--replay-rate`. Every detector but `offline` works on
             event time (the rate window, `for_s`, stuck `seconds`, hysteresis), so this is the same as
             living through those hours. Anomalies: spike, step, drift, stuck, out_of_range.
  real time  `offline` is judged on the wall clock (a sensor is seen when the evaluator processes its
             reading), so dropouts are run in real time: `--realtime-sensors` sensors for `--realtime-s`
             seconds, with `detection.offline_after_s` set to `--offline-after` (default 30 s instead of
             300 s, so a run takes minutes) and dropouts of 2-3x that.
Then reads each daemon's `alerts` table and scores it (pipeline/evaluate/scoring.py: matching rule there).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from datetime import datetime, timezone

from ..tools.anomalies import KINDS, Plan
from ..tools.simulate import publish_loop, total_for
from ..tools.simulated_fleet import PROFILES, MessageFactory, Pacer, make_sensors
from .harness import Daemon, publisher, replay
from .report import render
from .scoring import Truth, censor, merge, score, targets

INTERVAL_S = 1.0  # each simulated sensor reports once a second, as under `make run`
REPLAY_KINDS = tuple(k for k in KINDS if k != "dropout")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m pipeline.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("--sensors", type=int, default=20, help="replayed sensors")
    ap.add_argument("--hours", type=float, default=3.0, help="simulated hours replayed (0: no replay part)")
    ap.add_argument("--anomalies", type=float, default=1.0, help="anomalies per sensor-hour in the replay")
    ap.add_argument("--kinds", default=",".join(REPLAY_KINDS), help="anomaly kinds in the replay")
    ap.add_argument("--warmup-s", type=float, default=600.0, help="no anomaly this long after a sensor starts")
    ap.add_argument("--settle-s", type=float, default=1800.0, help="quiet time after each anomaly")
    ap.add_argument("--replay-rate", type=float, default=1500.0, help="messages per second of wall clock (at most)")
    ap.add_argument("--realtime-s", type=float, default=240.0, help="seconds of the real-time part (0: none)")
    ap.add_argument("--realtime-sensors", type=int, default=20)
    ap.add_argument("--offline-after", type=float, default=30.0, help="detection.offline_after_s in the real-time part")
    ap.add_argument("--normal", action="store_true", help="normal data only: no anomaly at all, every alert is false")
    ap.add_argument("--tolerance", type=float, default=60.0, help="seconds after an anomaly's end an alert still matches it")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--truth", default="", help="also write the ground truth here (JSON lines)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the databases, topics and keys (names are logged)")
    a = ap.parse_args(argv)
    a.kinds = tuple(k.strip() for k in a.kinds.split(",") if k.strip())
    if set(a.kinds) - set(REPLAY_KINDS):
        ap.error(f"--kinds: choose from {','.join(REPLAY_KINDS)} (dropouts run in the real-time part)")
    if a.sensors < 1 or a.hours < 0 or a.realtime_s < 0 or a.replay_rate <= 0:
        ap.error("--sensors >= 1, --hours >= 0, --realtime-s >= 0, --replay-rate > 0")
    return a


def replay_part(a: argparse.Namespace, log, delivery: list) -> tuple[list, list[Truth], float]:
    """Simulated hours at full speed: alerts, ground truth, sensor-hours."""
    plan = Plan(per_hour=0.0 if a.normal else a.anomalies, kinds=a.kinds, warmup_s=a.warmup_s, settle_s=a.settle_s)
    span = a.hours * 3600.0
    with Daemon({}) as daemon:
        factory = MessageFactory(make_sensors(a.sensors, "evs"), tuple(PROFILES), seed=a.seed, plan=plan,
                                 root=daemon.root)
        t0 = math.floor(time.time() - span - 60.0)
        total = int(span / INTERVAL_S) * a.sensors
        messages = (factory.next_message(t0 + k * INTERVAL_S / a.sensors) for k in range(total))
        pub = publisher(daemon)
        started = time.monotonic()
        try:
            sent = replay(pub.publish, messages, a.replay_rate, arrived=daemon.raw_count)
            pub.wait_acked(120)
        finally:
            pub.close()
        log(f"replay: published={sent} in {time.monotonic() - started:.0f} s; waiting for the daemon")
        daemon.wait_processed()
        log(f"replay: processed after {time.monotonic() - started:.0f} s")
        truths = [Truth.from_record(x.truth()) for x in factory.take_truth()]
        alerts = daemon.alerts()
        lost = sent * len(PROFILES) - daemon.stored_readings()
        log(f"replay: readings sent={sent * len(PROFILES)} lost={lost}")
        delivery.append(lost)
    horizon = t0 + span
    # Anomalies cut short by the end of the data are left out (with their alerts); late alerts still count.
    alerts, kept = censor(alerts, truths, horizon, a.tolerance, late_alerts=True)
    return alerts, kept, a.sensors * span / 3600.0


def realtime_part(a: argparse.Namespace, log, delivery: list) -> tuple[list, list[Truth], float, float]:
    """Real time, for the wall-clock `offline` detector: alerts, ground truth, sensor-hours, the timer's tick."""
    off = a.offline_after
    plan = Plan(per_hour=0.0 if a.normal else 3600.0 / (4 * off), kinds=("dropout",), warmup_s=off,
                settle_s=off, durations=(("dropout", 2 * off, 3 * off),))
    n = a.realtime_sensors
    with Daemon({"detection": {"offline_after_s": off}}) as daemon:
        factory = MessageFactory(make_sensors(n, "evr"), tuple(PROFILES), seed=a.seed, plan=plan, root=daemon.root)
        pub = publisher(daemon)
        started = []
        try:
            publish_loop(pub.publish, factory, Pacer(n / INTERVAL_S, total_for(n / INTERVAL_S, a.realtime_s)),
                         a.realtime_s, lambda: False, on_truth=started.extend)
            horizon = time.time()
            pub.wait_acked(60)
        finally:
            pub.close()
        daemon.wait_processed()
        alerts = daemon.alerts()
        sent = pub.attempted * len(PROFILES)
        delivery.append(sent - daemon.stored_readings())
        log(f"real time: readings sent={sent} lost={delivery[-1]}")
        tick_s = daemon.tree["processing"]["interval_s"]
    truths = [Truth.from_record(x.truth()) for x in started + factory.take_truth()]
    alerts, kept = censor(alerts, truths, horizon, a.tolerance, late_alerts=False)
    log(f"real time: {len(kept)} dropouts scored, {len(truths) - len(kept)} cut off by the end of the run")
    return alerts, kept, n * a.realtime_s / 3600.0, tick_s


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True))
    parts, tick_s, lost = [], 5.0, []
    if a.hours > 0:
        parts.append(replay_part(a, log, lost))
    if a.realtime_s > 0:
        alerts, truths, hours, tick_s = realtime_part(a, log, lost)
        parts.append((alerts, truths, hours))
    alerts, truths, hours = merge(*parts)
    if a.truth:
        with open(a.truth, "w") as f:
            f.writelines(json.dumps({"sensor": t.sensor, "metric": t.metric, "kind": t.kind, "start": t.start,
                                     "end": t.end}) + "\n" for t in truths)
    result = score(alerts, truths, hours, a.tolerance)
    checks = targets(result, INTERVAL_S, a.offline_after, tick_s)
    meta = {"command": "python -m pipeline.evaluate " + " ".join(sys.argv[1:] if argv is None else argv),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.node()} {platform.machine()} {platform.python_version()}",
            "interval_s": INTERVAL_S, "offline_after_s": a.offline_after, "tick_s": tick_s,
            "readings_lost": sum(lost)}  # sent but not stored: the scores would blame the detectors for them
    if a.json:
        print(json.dumps({**meta, "result": result, "targets": [
            {"name": c.name, "limit": c.limit, "measured": c.measured, "met": c.met} for c in checks]}, indent=2))
    else:
        print(render(meta, result, checks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
