"""A flood of new series: the real daemon's RSS before, at its peak, per series, and after the state was released.

    python -m pipeline.tools.bench.flood [--sensors 1000] [--metrics 50] [--rounds 2] [--idle-s 30] [--set key=value ...]
    python -m pipeline.tools.bench --flood-series 50000      (the same, 1,000 sensors x 50 metrics)

The daemon (`realtime_pipeline.py`, a subprocess, config.yaml with its own database, topics, Redis prefix and
consumer group, `limits.state_idle_s` set to `--idle-s`) is started and left to settle; its RSS then is the
baseline. `--sensors` new sensors, each one message of `--metrics` readings per round (`--rounds` rounds, 30 s
of event time apart), are put in the raw Kafka topic as the bridge writes them; RSS is sampled until every
reading is stored (the peak). The event times lie in the last full hour, so every window of them can close by
the wall clock (`aggregation.idle_close_s` after the partition fell silent) and nothing pending holds a series
past `state_idle_s`. Then the flood stops and RSS is followed until state_idle_s, a sweep and `--settle-s` more
have passed (after). Growth per series = (peak - baseline) / series.

`--trace` runs the daemon under tracemalloc (pipeline/tools/bench/traced_daemon.py) and prints where the memory
held at the peak was allocated, by file and line (the daemon runs a few times slower under it).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import psycopg
import yaml
from confluent_kafka import Producer

from ...clients.kafka import ensure_topics, producer_conf
from ...clients.postgres import conninfo
from ...config import Secrets, Settings, parse
from .new_sensors import produce_as_bridge
from ...sinks.deadletter import dead_letter_topics
from .configtree import ROOT
from . import daemon_log
from .procs import daemon_env
from .new_sensors import cleanup, count_rows, settings_tree


METRICS = 50  # per sensor, by default (config.yaml's limits.max_metrics_per_sensor)


def rss_mb(pid: int) -> float:
    """Resident set size of a process now (MB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def event_time(now: float) -> float:
    """A time in the last full hour, early enough that the windows of `rounds` readings 30 s apart all end
    before the hour does (and so close by the wall clock once the partition is silent)."""
    return (now // 3600 - 1) * 3600 + 60


def produce(settings: Settings, root: str, sensors: int, metrics: int, rounds: int, t0: float) -> int:
    """One message of `metrics` readings per sensor and round into the raw topic; returns the readings sent."""
    cfg = settings.config.kafka
    producer = Producer({**producer_conf(cfg, "bench-flood"), "linger.ms": 20, "queue.buffering.max.messages": 500_000})
    names = [f"flood_{m:02d}" for m in range(metrics)]
    now_us = time.time_ns() // 1000
    n = 0
    for k in range(rounds):
        for i in range(sensors):
            sensor = f"fl-{i:06d}"
            payload = orjson.dumps({"readings": {name: 20.0 + (i % 97) / 10 + m / 100 + k / 1000
                                                 for m, name in enumerate(names)},
                                    "timestamp": t0 + 30 * k, "type": "env", "location": f"hall-{i % 100}"})
            n += 1
            produce_as_bridge(producer, cfg.topics.raw, f"{root}/{sensor}", sensor, payload, now_us + n)
    if producer.flush(60):
        raise RuntimeError("Kafka did not confirm every message in 60 s")
    return n * metrics


def wait_ready(proc: subprocess.Popen, log_path: Path, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not daemon_log.assignment(log_path.read_text(errors="replace")):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the daemon did not become ready; log {log_path}")
        time.sleep(0.2)


def pending_past_end(conn: psycopg.Connection) -> int:
    """Pending windows whose end has passed (they close once their partition has been silent idle_close_s)."""
    return conn.execute("SELECT count(*) FROM aggregation_pending WHERE window_end <= now() AT TIME ZONE 'utc'").fetchone()[0]


def wait_file(path: Path, timeout_s: float = 120.0) -> None:
    """Until the traced daemon has written a snapshot (whole: it renames it into place), seconds under load."""
    deadline = time.monotonic() + timeout_s
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.5)


def follow(pid: int, seconds: float, every: float = 0.5) -> list[float]:
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        out.append(rss_mb(pid))
        time.sleep(every)
    return out


def run(args: argparse.Namespace) -> dict:
    rid = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix="bench-flood-"))
    extra = [f"limits.state_idle_s={args.idle_s}", "detection.offline_after_s=0", *args.set]
    tree = settings_tree(rid, extra)
    settings = Settings(parse(tree, {}), Secrets.from_env({}), "bench")
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(tree))
    from migrations import migrate

    migrate(settings, out=open("/dev/null", "w"))
    kafka = settings.config.kafka
    ensure_topics(kafka, [kafka.topics.raw, *dead_letter_topics(kafka).values()])
    series = args.sensors * args.metrics
    log_path = workdir / "daemon.log"
    wrapper = ("pipeline.tools.bench.traced_daemon" if args.trace else
               "pipeline.tools.bench.mallocstats_daemon" if args.mallocstats else None)
    argv = [sys.executable] + (["-m", wrapper] if wrapper else [str(ROOT / "realtime_pipeline.py")])
    env = daemon_env()
    trace_file = workdir / "peak.tracemalloc"
    env.update(item.partition("=")[::2] for item in args.env)
    if args.trace:
        env["PIPELINE_TRACEMALLOC_OUT"] = str(trace_file)
    stats_file = workdir / "mallocstats"
    if args.mallocstats:
        env["PIPELINE_MALLOCSTATS_OUT"] = str(stats_file)

    def allocator_stats() -> None:  # --mallocstats: the daemon appends them to stats_file (mallocstats_daemon.py)
        if args.mallocstats and not args.trace:
            proc.send_signal(signal.SIGUSR2)
            time.sleep(1.0)
    proc = subprocess.Popen(argv + ["--config", str(config_path)], stdout=open(log_path, "wb"),
                            stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    out: dict = {"sensors": args.sensors, "metrics": args.metrics, "series": series, "rounds": args.rounds,
                 "state_idle_s": args.idle_s, "load_average": os.getloadavg()}
    try:
        with psycopg.connect(**conninfo(settings.config.postgres, settings.secrets.postgres_password), autocommit=True) as conn:
            wait_ready(proc, log_path)
            follow(proc.pid, args.settle_s)
            before = rss_mb(proc.pid)
            allocator_stats()
            if args.trace:
                proc.send_signal(signal.SIGUSR2)
                wait_file(trace_file.with_suffix(".base"))
            expected = produce(settings, f"bench{rid}", args.sensors, args.metrics, args.rounds, event_time(time.time()))
            t0 = time.monotonic()
            samples = [before]
            while count_rows(conn) < expected:
                if proc.poll() is not None or time.monotonic() - t0 > args.timeout:
                    raise RuntimeError(f"{count_rows(conn)} of {expected} readings stored; log {log_path}")
                samples += follow(proc.pid, 1.0, 0.25)
            stored_s = time.monotonic() - t0
            samples += follow(proc.pid, 3.0, 0.25)  # the partials' publish, the windows' pending marks
            if args.trace:
                proc.send_signal(signal.SIGUSR2)
                wait_file(trace_file)
            peak = max(samples)
            allocator_stats()
            # Released: windows close idle_close_s after the partition fell silent, every owner's sweep runs
            # between state_idle_s and 1.1 times that (runtime/idle.py) after the last reading, on its tick.
            waited = follow(proc.pid, 1.1 * args.idle_s + settings.config.aggregation.idle_close_s)
            # On a loaded machine the closing of 150,000 windows can outlast that, and a series is released only
            # once its windows are closed: wait for them (reported), then for a sweep and the settling.
            t1 = time.monotonic()
            while pending_past_end(conn) and time.monotonic() - t1 < args.timeout:
                waited += follow(proc.pid, 2.0)
            out["closing_outlasted_s"] = round(time.monotonic() - t1, 1)
            waited += follow(proc.pid, (0.1 * args.idle_s if out["closing_outlasted_s"] > 0 else 0) + args.settle_s)
            after = rss_mb(proc.pid)
            allocator_stats()
            if args.trace:
                proc.send_signal(signal.SIGUSR2)
                wait_file(trace_file.with_suffix(".2"))
            out.update({"readings": expected, "stored_s": round(stored_s, 1), "rss_before_mb": round(before, 1),
                        "rss_peak_mb": round(peak, 1), "rss_after_mb": round(after, 1),
                        "growth_mb": round(peak - before, 1), "bytes_per_series": round((peak - before) * 2**20 / series),
                        "after_minus_before_mb": round(after - before, 1),
                        "rss_min_while_waiting_mb": round(min(waited), 1)})
            # Windows whose end has passed must have closed; one still open (the flood's day, with a 1d period) holds
            # its series' window state until it ends, and is reported by period.
            out["windows_pending_after"] = pending_past_end(conn)
            out["windows_open_after"] = dict(conn.execute(
                "SELECT period, count(*) FROM aggregation_pending WHERE window_end > now() AT TIME ZONE 'utc' "
                "GROUP BY period").fetchall())
    finally:
        proc.terminate()
        if stats_file.exists():  # before, at the peak, after the release
            out["allocator"] = stats_file.read_text().splitlines()
        if not args.keep and not args.trace:
            shutil.rmtree(workdir, ignore_errors=True)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not args.keep:
            cleanup(settings, rid)
    if args.trace and trace_file.exists():
        highest = trace_file.with_suffix(".highest")
        out["top_allocations"] = top_allocations(highest if highest.exists() else trace_file)
        after = trace_file.with_suffix(".2")
        if after.exists():
            out["top_allocations_after"] = top_allocations(after, 15)
        current, peak = map(int, Path(str(trace_file) + ".peak").read_text().split())
        out["traced_mb"] = {"held": round(current / 2**20, 1), "highest_during_flood": round(peak / 2**20, 1)}
    return out


def top_allocations(path: Path, limit: int = 25) -> list[str]:
    """The snapshot's largest holders by file and line, minus the baseline snapshot taken at start-up."""
    import tracemalloc

    peak = tracemalloc.Snapshot.load(str(path))
    base_path = path.with_suffix(".base")  # pipeline/tools/bench/traced_daemon.py names them
    stats = (peak.compare_to(tracemalloc.Snapshot.load(str(base_path)), "lineno") if base_path.exists()
             else peak.statistics("lineno"))
    return [str(s) for s in stats[:limit]]


def from_bench(args: argparse.Namespace) -> int:
    """`python -m pipeline.tools.bench --flood-series N`: N/METRICS sensors of METRICS metrics, its --set, --json, --keep."""
    return main(["--sensors", str(max(1, args.flood_series // METRICS)), *sum((["--set", s] for s in args.set or []), []),
                 *(["--json"] if args.json else []), *(["--keep"] if args.keep else [])])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.tools.bench.flood", description=__doc__.split("\n\n")[0])
    p.add_argument("--sensors", type=int, default=1000)
    p.add_argument("--metrics", type=int, default=METRICS, help="metrics per sensor (at most limits.max_metrics_per_sensor)")
    p.add_argument("--rounds", type=int, default=2, help="readings per series")
    p.add_argument("--idle-s", type=float, default=30.0, help="limits.state_idle_s for the run")
    p.add_argument("--settle-s", type=float, default=10.0, help="seconds before the baseline and after the release")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--set", action="append", default=[], help="config override, e.g. kafka.bootstrap_servers=127.0.0.1:9093")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="environment of the daemon, e.g. MALLOC_ARENA_MAX=2")
    p.add_argument("--trace", action="store_true", help="tracemalloc in the daemon: where the peak's memory is held")
    p.add_argument("--mallocstats", action="store_true",
                   help="pymalloc's arenas and the process's memory before, at the peak and after (no tracemalloc)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    out = run(args)
    if args.json:
        print(json.dumps(out))
    else:
        for title in ("top_allocations", "top_allocations_after"):
            print(f"{title}:", *out.pop(title, []), sep="\n")
        print(", ".join(f"{k}={v}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
