"""The benchmark's ratios: what the pipeline costs against the bare path and against a peer, on one machine,
in one run, and what that machine is.

An absolute rate on a shared two-core box says more about the box than about the pipeline (the same
`make bench` sustained 9,987 msg/s on one machine and 6,458 on another of the same kind). What the pipeline
controls is its CPU per message against the least the same route can cost (floor.py, driven like the daemon)
and against what a user would run instead (peer_quix.py). Both are measured here, beside the daemon.

The peer covers only the consuming half (Kafka -> decode -> validate -> 1-minute windows -> PostgreSQL), so
it is compared with the daemon's consuming half on the same data, both working through the topic the
daemon's live level filled ("catch-up"): CPU from each one's first stored row to its last, per message.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from typing import Callable

import psycopg
import yaml

from ...clients.postgres import conninfo
from ...config import Secrets, Settings, parse
from .configtree import ROOT, deep_merge
from .measure import process_stats


def machine() -> dict:
    """What the figures were measured on: enough to tell two boxes apart, and to compare them by ratio."""
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem_gib, 1),
            "python": platform.python_version(), "kernel": platform.release(),
            "load_avg_1m_at_start": round(load[0], 2)}


def catch_up(pid: int, stored: Callable[[], int], expected: int, interval: float = 0.5,
             stall_s: float = 30.0, timeout_s: float = 900.0) -> dict:
    """A consumer process working through a filled topic: its CPU and time from the first row it stored to
    the last (start-up, imports and group join left out, for every process alike), per row stored.

    A topic small enough to be stored between two samples is measured from the last sample before the first
    row instead (so a short smoke run still gets a figure), and says so (`from_first_row` false)."""
    zero = first = last = None
    progress_at = time.monotonic()
    deadline = progress_at + timeout_s
    rows = 0
    while time.monotonic() < deadline:
        rows = stored()
        now = time.monotonic()
        cpu, _ = process_stats(pid)
        if not rows:
            zero = (now, cpu, 0)
        elif first is None:
            first = (now, cpu, rows)
        if last is None or rows > last[2]:
            last, progress_at = (now, cpu, rows), now
        if rows >= expected or now - progress_at > stall_s:
            break
        time.sleep(interval)
    from_first_row = first is not None and last is not None and last[2] > first[2]
    start = first if from_first_row else zero
    if start is None or last is None or last[2] <= start[2]:
        return {"complete": False, "rows": rows}
    done = last[2] - start[2]
    elapsed = max(1e-6, last[0] - start[0])
    return {"complete": last[2] >= expected, "rows": last[2], "measured_rows": done, "from_first_row": from_first_row,
            "cpu_s": round(last[1] - start[1], 2), "elapsed_s": round(elapsed, 2),
            "cpu_s_per_million_rows": round((last[1] - start[1]) / done * 1e6, 1),
            "rows_per_s": round(done / elapsed, 1)}


def count_rows(conninfo: dict, sql: str) -> Callable[[], int]:
    def stored() -> int:
        try:
            with psycopg.connect(**conninfo, autocommit=True) as conn:
                return conn.execute(sql).fetchone()[0] or 0
        except psycopg.errors.UndefinedTable:
            return 0  # the peer creates its tables with its first write
    return stored


def loss_and_duplicates(conninfo: dict, table: str, expected: int, sensor_prefix: str = "") -> dict:
    """After the consumer stopped: readings missing and readings stored twice (same sensor, metric, time)."""
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        rows, distinct = conn.execute(
            f"SELECT count(*), count(DISTINCT (sensor_id, metric, timestamp)) FROM {table} WHERE sensor_id LIKE %s",
            (sensor_prefix + "%",)).fetchone()
    return {"stored": rows, "lost": max(0, expected - distinct), "duplicated": rows - distinct}


def per_message(figures: dict, readings_per_message: int) -> float | None:
    """CPU seconds per million messages from a catch-up measured in rows (readings)."""
    if not figures.get("complete"):
        return None
    return round(figures["cpu_s_per_million_rows"] * readings_per_message, 1)


def stop(proc: subprocess.Popen, timeout: float = 60.0) -> str:
    if proc.poll() is None:
        proc.terminate()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return (out or b"").decode(errors="replace")


def peer_python() -> str:
    """The peer runs in a venv of its own (requirements-peer.txt, `make peer-venv`): it needs an older
    confluent-kafka than the pipeline's. BENCH_PEER_PYTHON names another interpreter."""
    path = os.environ.get("BENCH_PEER_PYTHON") or str(ROOT / ".venv-peer" / "bin" / "python")
    if not os.access(path, os.X_OK):
        raise SystemExit(f"bench: no peer interpreter at {path}: run `make peer-venv` (or set BENCH_PEER_PYTHON)")
    return path


def run_peer(bench, topic: str, expected_rows: int) -> dict:
    """The Quix Streams peer through the topic the daemon's live level filled, into tables of its own."""
    cfg = bench.settings.config
    pg = bench.pg
    dsn = f"host={pg['host']} port={pg['port']} user={pg['user']} dbname={pg['dbname']}"
    argv = [peer_python(), "-m", "pipeline.tools.bench.peer_quix", "--bootstrap", cfg.kafka.bootstrap_servers,
            "--topic", topic, "--group", f"bench-{bench.id}-peer", "--postgres-dsn", dsn,
            "--readings-table", "peer_readings", "--aggregations-table", "peer_aggregations",
            "--state-dir", str(bench.workdir / "quix-state")]
    log_path = bench.workdir / "peer.log"
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(log_path, "wb"), cwd=ROOT)
    try:
        figures = catch_up(proc.pid, count_rows(bench.pg, "SELECT count(*) FROM peer_readings"), expected_rows)
    finally:
        exit_line = stop(proc).strip().splitlines()
    figures["exit"] = exit_line[-1] if exit_line else ""
    figures.update(loss_and_duplicates(bench.pg, "peer_readings", expected_rows))
    if not figures.get("complete"):
        bench.log(f"peer did not store every reading ({figures.get('rows')} of {expected_rows}); log: {log_path}")
    return figures


def run_daemon_catch_up(bench, topic: str, expected_rows: int, sensor_prefix: str) -> dict:
    """The daemon's consuming half through the same filled topic: a daemon with a database, streams and
    consumer group of its own, whose MQTT subscription receives nothing, from its first stored row to its last."""
    from migrations import migrate

    rid = bench.id
    names = ("dead_letter", "dead_letter_failed", "dead_letter_exhausted")
    tree = deep_merge(bench.tree, {
        "instance_id": f"bench-{rid}-c",
        "mqtt": {"topics": [f"bench{rid}idle/#"], "client_id": f"bench-{rid}-c", "shared_group": ""},
        "kafka": {"topics": {"raw": topic, **{n: f"bench{rid}.c.{n}" for n in names}},
                  "consumer_group": f"bench-{rid}-c"},
        "redis": {"key_prefix": f"bench{rid}:c:"},
        "postgres": {"database": f"bench_{rid}_c"},
    })
    settings = Settings(parse(tree, {}), Secrets.from_env({}), "bench")
    with open(os.devnull, "w") as devnull:
        migrate(settings, out=devnull)
    cfg_path = bench.workdir / "config-catch-up.yaml"
    cfg_path.write_text(yaml.safe_dump(tree))
    log_path = bench.workdir / "daemon-catch-up.log"
    proc = subprocess.Popen([sys.executable, str(ROOT / "realtime_pipeline.py"), "--config", str(cfg_path)],
                            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    pg = settings.config.postgres
    info = conninfo(pg, settings.secrets.postgres_password)
    try:
        figures = catch_up(proc.pid, count_rows(info, f"SELECT count(*) FROM measurements WHERE sensor_id LIKE "
                                                      f"'{sensor_prefix}%'"), expected_rows)
        stop(proc)
        figures.update(loss_and_duplicates(info, "measurements", expected_rows, sensor_prefix))
        return figures
    finally:
        stop(proc)
        with psycopg.connect(**conninfo(pg, settings.secrets.postgres_password, database=pg.maintenance_database),
                             autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{pg.database}" WITH (FORCE)')


def peer_report(daemon: dict, peer: dict, readings_per_message: int) -> dict:
    d, p = per_message(daemon, readings_per_message), per_message(peer, readings_per_message)
    return {"name": "quixstreams", "cpu_s_per_million": p,
            "sustained_rate": round(peer["rows_per_s"] / readings_per_message, 1) if peer.get("complete") else None,
            "daemon_cpu_s_per_million": d,
            "daemon_sustained_rate": round(daemon["rows_per_s"] / readings_per_message, 1) if daemon.get("complete") else None,
            "ratio": round(d / p, 3) if d and p else None, "daemon_catch_up": daemon, "peer_catch_up": peer}


def measure(bench, args, headline: dict) -> dict:
    """The bare path at the headline's rate, and the peer beside the daemon's consuming half over the headline's
    topic (still holding every message of that level): the figures the ratios are made of."""
    out: dict = {}
    # The peer first: it reads the headline's topic, which a broker started again for the next level (--fresh-broker)
    # no longer holds.
    if args.peer:
        topic, rows, prefix = bench.level_topic(0), headline["stored_pg"], "s1-"
        bench.log("peer: the daemon's consuming half, then Quix Streams, through the first level's topic")
        daemon = run_daemon_catch_up(bench, topic, rows, prefix)
        peer = run_peer(bench, topic, rows)
        out["peer"] = {**peer_report(daemon, peer, args.readings_per_message), "broker": headline.get("broker")}
    if args.floor:
        bench.log(f"bare path: offering {headline['offered_rate']:,.0f} msg/s for {args.duration:.0f} s")
        floor = bench.run(headline["offered_rate"], kind="floor")
        out.update({"floor": floor, "floor_cpu_s_per_million": floor["cpu_s_per_million"]})
    return out

