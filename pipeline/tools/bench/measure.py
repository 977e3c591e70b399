"""Observers that measure the pipeline from its outputs: Redis stream entries, PostgreSQL rows,
consumer lag, and the daemon's CPU and memory."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import psycopg
import redis
from confluent_kafka import Consumer, TopicPartition


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    s = sorted(values)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))] * 1000  # noqa: E731
    return {"p50": round(pick(0.50), 1), "p95": round(pick(0.95), 1), "p99": round(pick(0.99), 1),
            "max": round(s[-1] * 1000, 1)}


class RedisObserver(threading.Thread):
    """XREADs the readings stream as entries arrive: latency = arrival - the reading's publish time."""

    def __init__(self, client: redis.Redis, stream: str, start_id: bytes = b"0", sensor_prefix: bytes = b""):
        super().__init__(daemon=True)
        self.client, self.stream, self.start_id, self.prefix = client, stream, start_id, sensor_prefix
        self.keys: list[bytes] = []  # the entry's `id` (sensor|metric|event time): the reading's identity
        self.latencies: list[float] = []
        self.arrivals: list[float] = []  # when each entry was read, for latency over time
        self.stop = threading.Event()
        self.last_at = 0.0

    def run(self) -> None:
        last = self.start_id
        while not self.stop.is_set():
            resp = self.client.xread({self.stream: last}, count=20000, block=100)
            now = time.time()
            for _, entries in resp or []:
                for entry_id, f in entries:
                    last = entry_id
                    if not f[b"id"].startswith(self.prefix):
                        continue
                    self.keys.append(f[b"id"])
                    self.latencies.append(now - float(f[b"ts"]))
                    self.arrivals.append(now)
                    last = entry_id
                self.last_at = now


class PostgresObserver(threading.Thread):
    """Polls new `measurements` rows (or another table of the same columns) every `interval` s: latency = when the row became visible (committed) -
    the reading's publish time. The poll interval bounds the error from above.

    With several writers (--instances), ids are taken in one order and committed in another, so each poll
    also reads back `lookback` ids below the highest seen (more than every writer's transactions in flight
    hold) and counts each id once."""

    def __init__(self, conninfo: dict, start_id: int = 0, sensor_prefix: str = "", table: str = "measurements",
                 interval: float = 0.05, lookback: int = 0):
        super().__init__(daemon=True)
        self.conninfo, self.start_id, self.interval, self.lookback = conninfo, start_id, interval, lookback
        self.table = table
        self.prefix = sensor_prefix
        self.count = 0
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.last_at = 0.0

    def run(self) -> None:
        last_id = self.start_id
        recent: set[int] = set()  # ids seen within the lookback
        with psycopg.connect(**self.conninfo, autocommit=True) as conn:
            # The table grows from empty faster than autovacuum analyses it: with stale statistics the planner
            # picks a sequential scan, and polling by sequential scan cost the database more than the pipeline's
            # own writes by the end of a run. Every poll reads only the newest rows, by the primary key.
            conn.execute("SET enable_seqscan = off")
            # And by that index only, in id order: with no statistics the planner estimates `id > N` as a third
            # of the table and (once the statement is prepared) picks a parallel bitmap scan and a sort over
            # every recent row: 170 ms per poll at 1.8M rows, against 11 ms by the index.
            for setting in ("enable_bitmapscan", "enable_sort"):
                conn.execute(f"SET {setting} = off")
            conn.execute("SET max_parallel_workers_per_gather = 0")
            while not self.stop.is_set():
                floor = max(self.start_id, last_id - self.lookback)
                rows = conn.execute(f"SELECT id, extract(epoch FROM timestamp)::float8, sensor_id FROM {self.table} "
                                    "WHERE id > %s ORDER BY id LIMIT 100000", (floor,)).fetchall()
                if rows:  # the highest id read moves on past rows of other sensors too
                    last_id = max(last_id, rows[-1][0])
                rows = [row for row in rows if row[2].startswith(self.prefix)]
                now = time.time()
                if self.lookback:
                    rows = [row for row in rows if row[0] not in recent]
                    recent.update(row[0] for row in rows)
                if rows:
                    self.count += len(rows)
                    self.latencies.extend(now - ts for _, ts, _ in rows)
                    self.last_at = now
                if self.lookback and len(recent) > 4 * self.lookback:
                    recent = {i for i in recent if i > last_id - self.lookback}
                time.sleep(self.interval)


class LagSampler(threading.Thread):
    """Consumer-group lag on the raw topic once a second: high watermark - committed offset."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int):
        super().__init__(daemon=True)
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        started = time.time()
        try:
            while not self.stop.wait(1.0):
                committed = self.consumer.committed(self.tps, timeout=5)
                lag = 0
                for tp in committed:
                    _, high = self.consumer.get_watermark_offsets(tp, timeout=5, cached=False)
                    lag += high - max(tp.offset, 0)
                self.samples.append((round(time.time() - started, 1), lag))
        finally:
            self.consumer.close()


def latency_over_time(arrivals: list[float], latencies: list[float], start: float, step_s: float = 5.0) -> list[dict]:
    """p50/p99 (ms) of the entries read in each `step_s` interval from `start`: a stall or a drift shows here."""
    buckets: dict[int, list[float]] = {}
    for at, latency in zip(arrivals, latencies):
        buckets.setdefault(int((at - start) // step_s), []).append(latency)
    out = []
    for i in sorted(buckets):
        p = percentiles(buckets[i])
        out.append({"t_s": round(i * step_s, 1), "entries": len(buckets[i]), "p50": p["p50"], "p99": p["p99"]})
    return out


class ServiceCpu:
    """CPU cores used by the services under load (the process listening on each port, with its children:
    PostgreSQL's backends), so a run shows where the machine's time went besides the daemon."""

    def __init__(self, ports: dict[str, int]):
        listeners = {c.laddr.port: c.pid for c in psutil.net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN and c.pid is not None}
        self.pids = {name: listeners.get(port) for name, port in ports.items()}
        self.start: dict[str, float] = {}
        self.t0 = 0.0

    def _cpu(self, pid: int | None) -> float:
        if pid is None:
            return 0.0
        total = 0.0
        try:
            parent = psutil.Process(pid)
            for proc in [parent, *parent.children(recursive=True)]:
                try:
                    t = proc.cpu_times()
                    total += t.user + t.system + t.children_user + t.children_system
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        return total

    def begin(self, sample_s: float = 5.0) -> None:
        self.t0 = time.time()
        self.start = {name: self._cpu(pid) for name, pid in self.pids.items()}
        # The development broker's CPU grows with what it holds at a constant rate (bench/RESULTS.md, "The medium-rate
        # tail", 2026-12-07): each level records the Kafka broker's cores per `sample_s`, so a level it distorts says so.
        self.kafka_over_time: list[tuple[float, float]] = []
        self._stop = threading.Event()
        threading.Thread(target=self._sample, args=(sample_s,), daemon=True).start()

    def _sample(self, every: float) -> None:
        pid = self.pids.get("kafka")
        last_t, last = time.time(), self._cpu(pid)
        while pid is not None and not self._stop.wait(every):
            now, cpu = time.time(), self._cpu(pid)
            self.kafka_over_time.append((round(now - self.t0, 1), round((cpu - last) / max(1e-6, now - last_t), 2)))
            last_t, last = now, cpu

    def cores(self) -> dict[str, float | None]:
        """Average cores per service since begin() (None: no process found listening on its port); ends sampling."""
        self._stop.set()
        elapsed = max(1e-6, time.time() - self.t0)
        return {name: (None if pid is None else round((self._cpu(pid) - self.start[name]) / elapsed, 2))
                for name, pid in self.pids.items()}


def process_stats(pid: int) -> tuple[float, float]:
    """(CPU seconds used so far, peak RSS in MB) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = __import__("os").sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return cpu, peak


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of a process's threads, by the kernel's thread name (the daemon names its own,
    pipeline/runtime/threadname.py; librdkafka's are rdk:*, merged by kind; unnamed ones count as `python`)."""
    ticks = __import__("os").sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        if name.startswith("rdk:"):
            name = name.rstrip("-0123456789")  # rdk:broker1, rdk:broker-1 -> rdk:broker
        elif name.startswith("python"):
            name = "python"
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


def thread_cores(before: dict[str, float], after: dict[str, float], elapsed_s: float) -> dict[str, float]:
    """Cores per thread name between two thread_cpu() snapshots, busiest first."""
    cores = {name: (after[name] - before.get(name, 0.0)) / max(1e-6, elapsed_s) for name in after}
    return {name: round(c, 3) for name, c in sorted(cores.items(), key=lambda kv: -kv[1]) if c >= 0.0005}
