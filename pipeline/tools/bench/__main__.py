"""End-to-end benchmark against the local services.

    python -m pipeline.tools.bench [--rate 10000] [--duration 60] [--readings-per-message 1|3] [--find-max] [--json]
    python -m pipeline.tools.bench --fleet             (20,000 sensors x 3 readings at 2,000 msg/s for 90 s)
    python -m pipeline.tools.bench --flood-series 50000   (the daemon's RSS under a flood of new series)

Starts its own Mosquitto (deploy/mosquitto.conf settings) on a free port, the daemon as a subprocess
with its own database, topics and streams, drives QoS 1 load from N simulated devices, and measures
from the data: loss, duplicates, latency to Redis and to the committed PostgreSQL row, the daemon's
CPU and memory, consumer lag, and Mosquitto's own C-client forwarding rate for comparison.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import redis
import yaml
from confluent_kafka.admin import AdminClient

from ...config import Secrets, Settings, parse
from ...clients.postgres import conninfo
from .configtree import ROOT, deep_merge
from .loadgen import generate, payload_for
from .measure import (LagSampler, PostgresObserver, RedisObserver, ServiceCpu, latency_over_time, percentiles,
                      process_stats, thread_cores, thread_cpu)
from .procs import daemon_env, mosquitto, mosquitto_limit
from . import cli, daemon_log, dialects, ratios, suite
from .cli import FLEET
from .broker import FRESH, NEW_TOPICS, OwnBroker
from .peer_quix import prepare_topic
from .report import ratio_lines, sustainable, table
from . import floor as floor_process
from ..progress import Progress, Ticking


class Bench:
    """One broker and one database for the whole benchmark; `run(rate)` measures one load level with a fresh daemon."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.id = uuid.uuid4().hex[:8]
        self.workdir = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
        self.broker = None
        self.kafka: OwnBroker | None = None  # --fresh-broker: a tansu of our own, started empty before each level
        self.broker_state = NEW_TOPICS
        self.daemons: list[subprocess.Popen] = []
        self.step = 0
        self.seq = 0
        self.daemon_starts = 0

    def log(self, text: str) -> None:
        print(f"bench: {text}", file=sys.stderr, flush=True)

    # -- set-up -------------------------------------------------------------------------------
    def start(self) -> None:
        a = self.args
        if a.mqtt_port:
            self.mqtt_port = a.mqtt_port
        else:
            self.broker = mosquitto(self.workdir).start()
            self.mqtt_port = self.broker.port
        base = yaml.safe_load((ROOT / "config.yaml").read_text())
        rid = self.id
        self.tree = deep_merge(base, {
            "instance_id": f"bench-{rid}", "log_level": "INFO",
            "mqtt": {"port": self.mqtt_port, "topics": [f"bench{rid}/#"], "client_id": f"bench-{rid}", "protocol": a.mqtt_protocol},
            "kafka": {"partitions": a.partitions},
            "redis": {"key_prefix": f"bench{rid}:", "stream_maxlen": 10_000_000},
            "postgres": {"database": f"bench_{rid}"},
            "dashboard": {"enabled": False},
        })
        for extra in a.set or []:
            key, _, value = extra.partition("=")
            node = self.tree
            *path, leaf = key.split(".")
            for k in path:
                node = node.setdefault(k, {})
            node[leaf] = yaml.safe_load(value)
        if a.fresh_broker:
            self.kafka = OwnBroker(self.workdir).start()
            self.tree["kafka"]["bootstrap_servers"] = self.kafka.bootstrap
            self.log(f"own broker: tansu on {self.kafka.bootstrap}, started again before each level")
        self.base_tree = self.tree  # each level lays its dialect's recipe over this
        self.settings = Settings(parse(self.tree, {}), Secrets.from_env({}), "bench")
        from migrations import migrate

        migrate(self.settings, out=open("/dev/null", "w"))
        self.pg = conninfo(self.settings.config.postgres, self.settings.secrets.postgres_password)
        with psycopg.connect(**self.pg, autocommit=True) as conn:
            # The observer's index, in the benchmark's own database only. PostgresObserver reads new rows by
            # `id > N` 20 times a second; partitioned `measurements` has only a BRIN on (timestamp, id), whose
            # block ranges not yet summarized by autovacuum every such query reads in full: that cost PostgreSQL
            # a whole core, and every later level its latency. (The pipeline never reads measurements by id.)
            conn.execute("CREATE INDEX IF NOT EXISTS bench_observer_id ON measurements (id)")
        self.start_daemon()
        self.redis = redis.Redis(host=self.settings.config.redis.host, port=self.settings.config.redis.port)

    def start_daemon(self, kind: str = "daemon") -> None:
        """The daemon (or --instances daemons in one consumer group, on one MQTT shared subscription) on new
        Kafka topics and a new consumer group: every load level starts from empty topics. (The development
        broker's fetch cost grows with the size of a topic, which a real Kafka's does not; reusing one topic
        across levels would charge each level for all the ones before it.)"""
        self.stop_daemon()
        rid, level, n = self.id, self.daemon_starts, self.args.instances
        if self.kafka is not None and level > 0:
            self.kafka.restart()  # empty: no earlier level's data weighs on this one
        self.broker_state = FRESH if self.kafka is not None else NEW_TOPICS
        self.daemon_starts += 1
        names = ("raw", "dlq", "dlq.failed", "dlq.exhausted")
        self.tree["kafka"].update({
            "topics": dict(zip(("raw", "dead_letter", "dead_letter_failed", "dead_letter_exhausted"),
                               (self.level_topic(level, name) for name in names))),
            "consumer_group": f"bench-{rid}-{level}"})
        if n > 1:
            self.tree["mqtt"]["shared_group"] = f"bench{rid}"
        self.settings = Settings(parse(self.tree, {}), Secrets.from_env({}), "bench")
        if self.args.peer and level == 0:  # the peer reads this level's topic afterwards: see peer_quix.prepare_topic
            prepare_topic(self.settings.config.kafka.bootstrap_servers, self.level_topic(0), self.args.partitions)
        self.daemons, logs = [], []
        self.daemon_logs = logs
        for i in range(n):
            tree = deep_merge(self.tree, {"instance_id": f"bench-{rid}-{i}"} if n > 1 else {})
            cfg_path = self.workdir / f"config-{i}.yaml"
            cfg_path.write_text(yaml.safe_dump(tree))
            log_path = self.workdir / f"daemon-{level}-{i}.log"
            logs.append(log_path)
            argv = ([sys.executable, str(ROOT / "realtime_pipeline.py")] if kind == "daemon"
                    else [sys.executable, "-m", "pipeline.tools.bench.floor"])
            self.daemons.append(subprocess.Popen(
                argv + ["--config", str(cfg_path)],
                stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, cwd=ROOT, env=daemon_env()))
        deadline = time.monotonic() + 90
        partitions = set(range(self.settings.config.kafka.partitions))
        while True:  # every instance subscribed to MQTT, and the group's partitions split among them
            texts = [p.read_text(errors="replace") for p in logs]
            owned = [daemon_log.assignment(t) for t in texts]
            if (all("event=mqtt_subscribed" in t for t in texts) and sum(map(len, owned)) == len(partitions)
                    and set().union(*owned) == partitions):
                break
            if any(d.poll() is not None for d in self.daemons) or time.monotonic() > deadline:
                raise SystemExit(f"bench: the daemon did not become ready; log:\n{texts[-1][-3000:]}")
            time.sleep(0.2)
        self.log(f"ready: {kind} pid(s) {', '.join(str(d.pid) for d in self.daemons)}, mosquitto port {self.mqtt_port}, "
                 f"workdir {self.workdir}")

    def level_topic(self, level: int, name: str = "raw") -> str:
        return f"bench{self.id}.{level}.{name}"

    def stop_daemon(self) -> None:
        for d in self.daemons:
            if d.poll() is None:
                d.terminate()
        for d in self.daemons:
            try:
                d.wait(60)
            except subprocess.TimeoutExpired:
                d.kill()

    def deduplicated_at_stop(self) -> dict[str, int]:
        """Stop the daemons and read what they skipped as already stored, by reason, from their last log line."""
        self.stop_daemon()
        return daemon_log.deduplicated(p.read_text(errors="replace") for p in self.daemon_logs)

    def daemon_stats(self) -> tuple[float, float]:
        """CPU seconds of all instances together, and the largest instance's peak RSS (MB)."""
        stats = [process_stats(d.pid) for d in self.daemons]
        return sum(s[0] for s in stats), max(s[1] for s in stats)

    def daemon_threads(self) -> dict[str, float]:
        """CPU seconds so far by thread name, every instance together."""
        total: dict[str, float] = {}
        for d in self.daemons:
            for name, cpu in thread_cpu(d.pid).items():
                total[name] = total.get(name, 0.0) + cpu
        return total

    def stop(self) -> None:
        self.stop_daemon()
        if self.broker:
            self.broker.stop()
        if self.kafka is not None:
            self.kafka.stop()  # its topics go with it
        cfg = self.settings.config if hasattr(self, "settings") else None
        if cfg and not self.args.keep:
            with psycopg.connect(**conninfo(cfg.postgres, self.settings.secrets.postgres_password,
                                            database=cfg.postgres.maintenance_database), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{cfg.postgres.database}" WITH (FORCE)')
            keys = list(self.redis.scan_iter(f"bench{self.id}:*")) if hasattr(self, "redis") else []
            if keys:
                self.redis.delete(*keys)
            if self.kafka is None:  # our own broker took its topics with it
                admin = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers})
                topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"bench{self.id}.")]
                if topics:
                    admin.delete_topics(topics, operation_timeout=10)
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- the machine's own limit ----------------------------------------------------------------
    def service_ports(self) -> dict[str, int]:
        cfg = self.settings.config
        kafka_port = int(cfg.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])
        return {"kafka": kafka_port, "postgres": cfg.postgres.port, "redis": cfg.redis.port, "mosquitto": self.mqtt_port}

    def broker_limit(self) -> float:
        """Mosquitto C client to C client, QoS 0, the same payload size: messages per second."""
        return mosquitto_limit(self.mqtt_port, payload_for(123456, time.time(), self.args.readings_per_message),
                               f"limit{self.id}/x", self.log)

    # -- one load level -------------------------------------------------------------------------
    def run(self, rate: float, kind: str = "daemon", readings: int | None = None, duration: float | None = None,
            dialect: str = "native") -> dict:
        """One load level through the daemon, or (kind "floor") through the bare path (floor.py); readings per
        message and seconds of load as given on the command line unless set here; payloads of `dialect`
        (dialects.py: a mapped dialect's recipe goes into the daemon's config for this level only)."""
        a = self.args
        duration = duration or a.duration
        d = dialects.DIALECTS[dialect]
        self.tree = dialects.level_tree(self.base_tree, d)
        if self.step or kind != "daemon" or d.recipe:
            self.start_daemon(kind)
        self.step += 1
        readings = readings or a.readings_per_message
        sensors = [f"s{self.step}-{i:04d}" for i in range(a.sensors)]
        dialects.publish_setup(d, "127.0.0.1", self.mqtt_port, f"bench{self.id}", sensors, readings)  # not measured
        stream = f"bench{self.id}:" + (self.settings.config.redis.streams.readings if kind == "daemon"
                                       else floor_process.STREAM_SUFFIX)
        table = "measurements" if kind == "daemon" else floor_process.TABLE
        last = self.redis.xrevrange(stream, count=1)
        # Only the load generator's sensors count: the daemon's own readings (the broker's drop counter, log counts,
        # host metrics) go the same way but were not published by the benchmark.
        prefix = d.sensor_prefix(f"s{self.step}-")  # as the daemon names them (a Sparkplug device: group_node_device)
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"  # LIKE's own _ and %
        rob = RedisObserver(self.redis, stream, last[0][0] if last else b"0", prefix.encode())
        with psycopg.connect(**self.pg) as conn:
            if kind != "daemon":
                conn.execute(floor_process.CREATE)  # before the floor makes it: an empty table to observe
            start_id = conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]
        several = a.instances > 1
        pob = PostgresObserver(self.pg, start_id, prefix, table, interval=0.1 if several else 0.05,
                               lookback=2 * a.instances * self.settings.config.sinks.postgres.batch_size if several else 0)
        lag = LagSampler(self.settings.config.kafka.bootstrap_servers, self.settings.config.kafka.consumer_group,
                         self.settings.config.kafka.topics.raw, self.settings.config.kafka.partitions)
        for t in (rob, pob, lag):
            t.start()
        services = ServiceCpu(self.service_ports())
        services.begin()
        cpu0, _ = self.daemon_stats()
        threads0 = self.daemon_threads()
        t_start = time.time()
        # Readings seen stored so far, against those the level offers (a bar on a terminal, key=value lines in a log).
        bar = Progress(f"bench {kind} {rate:,.0f} msg/s", round(rate * duration * readings), "readings")
        ticking = Ticking(bar, lambda: (pob.count, {})).__enter__()  # a daemon thread: ends with the process on an error
        gen = generate("127.0.0.1", self.mqtt_port, f"bench{self.id}", sensors, rate, duration, readings,
                       processes=a.publishers, seq_base=self.seq, topic=d.topic, payload=d.payload, numbered=d.numbered)
        self.seq += gen.published + a.publishers
        t_gen_end = time.time()
        expected = gen.published * readings
        def stored_rows() -> int:
            """Readings stored in this level, counted exactly (the poller measures latency, this counts loss)."""
            with psycopg.connect(**self.pg) as conn:
                return conn.execute(f"SELECT count(*) FROM {table} WHERE id > %s AND sensor_id LIKE %s",
                                    (start_id, like)).fetchone()[0]

        deadline, last_progress, last_count = time.time() + 180, time.time(), -1
        while time.time() < deadline:
            count = pob.count
            if count >= expected or count == last_count:  # done, or quiet: count exactly (the poller may skip)
                count = stored_rows()
            if count >= expected and len(rob.keys) >= expected:
                break
            if count != last_count:
                last_count, last_progress = count, time.time()
            elif time.time() - last_progress > 15:
                break
            time.sleep(0.5)
        time.sleep(1.0)  # late duplicates, if any, get a chance to show
        ticking.__exit__(None, None, None)
        bar.close()
        cpu1, peak_rss = self.daemon_stats()
        threads = thread_cores(threads0, self.daemon_threads(), time.time() - t_start)
        service_cores = services.cores()
        for t in (rob, pob, lag):
            t.stop.set()
        for t in (rob, pob, lag):
            t.join(10)
        distinct_redis = len(set(rob.keys))
        stored_pg = stored_rows()
        finished = max(pob.last_at, t_gen_end)
        sustained = min(gen.published, stored_pg / readings) / max(duration, finished - t_start - 0.5)
        drain_s = max(0.0, pob.last_at - t_gen_end)
        messages = max(1, gen.published)
        result = {
            "path": kind,
            "dialect": dialect,
            "broker": self.broker_state,
            "offered_rate": rate,
            "readings_per_message": readings,
            "instances": a.instances,
            "duration_s": duration,
            "published": gen.published,
            "acked_by_broker": gen.acked,
            "expected_readings": expected,
            "sustained_rate": round(sustained, 1),
            "sustained_readings_per_s": round(sustained * readings, 1),
            "stored_pg": stored_pg,
            "stored_redis": distinct_redis,
            "lost": max(0, expected - stored_pg) + max(0, expected - distinct_redis),
            "lost_pg": max(0, expected - stored_pg),
            "lost_redis": max(0, expected - distinct_redis),
            "duplicated": len(rob.keys) - distinct_redis,
            "latency_ms": {"redis": percentiles(rob.latencies), "pg": percentiles(pob.latencies)},
            "drain_after_load_s": round(drain_s, 2),
            "cpu_s_per_million": round((cpu1 - cpu0) / messages * 1e6, 1),
            "cpu_s_per_10k": round((cpu1 - cpu0) / messages * 1e4, 3),
            "cpu_s_per_million_readings": round((cpu1 - cpu0) / (messages * readings) * 1e6, 1),
            "peak_rss_mb": round(peak_rss, 1),
            "generator_cpu_s_per_million": round(gen.cpu_s / messages * 1e6, 1),
            "daemon_cores": round((cpu1 - cpu0) / max(1e-6, time.time() - t_start), 2),
            "daemon_threads": threads,
            "service_cores": service_cores, "kafka_cores_over_time": services.kafka_over_time,
            "generator_cores": round(gen.cpu_s / max(1e-6, time.time() - t_start), 2),
            "redis_latency_over_time": latency_over_time(rob.arrivals, rob.latencies, t_start),
            "consumer_lag": lag.samples,
            "max_consumer_lag": max((s[1] for s in lag.samples), default=0),
        }
        # Readings PostgreSQL skipped as already stored (a redelivery, or another value for a stored identity):
        # counted by the daemon, read from its last log line once it stopped.
        result["deduplicated"] = self.deduplicated_at_stop()
        result["offset_gaps"] = daemon_log.offset_gaps(p.read_text(errors="replace") for p in self.daemon_logs)
        return result


def main(argv: list[str] | None = None) -> int:
    args = cli.parser(__doc__.splitlines()[0]).parse_args(argv)
    if args.flood_series:
        from . import flood

        return flood.from_bench(args)
    if args.fleet:
        vars(args).update(FLEET)
    bench = Bench(args)
    if args.suite:
        return suite.main(bench, args)
    extras: dict = {"machine": ratios.machine()}
    try:
        bench.start()
        limit = bench.broker_limit()
        results = []
        rate = args.rate
        while True:
            bench.log(f"offering {rate:,.0f} msg/s for {args.duration:.0f} s")
            r = bench.run(rate)
            results.append(r)
            bench.log(f"sustained {r['sustained_rate']:,.0f} msg/s, lost {r['lost']}, p99 redis {r['latency_ms']['redis']['p99']} ms")
            if len(results) == 1:
                extras.update(ratios.measure(bench, args, r))
            if not args.find_max or not sustainable(r) or rate * args.step > args.max_rate:
                break
            rate = round(rate * args.step, -2)
        if args.dialect:
            extras.update(dialects.compare(bench, args, results[0]))
    finally:
        bench.stop()
    headline = results[0]
    best = max((r for r in results if sustainable(r)), key=lambda r: r["offered_rate"], default=None)
    floor_cpu = extras.get("floor_cpu_s_per_million")
    for r in results:  # every level against the bare path measured at the first rate
        r["overhead_ratio"] = round(r["cpu_s_per_million"] / floor_cpu, 3) if floor_cpu else None
    report = dict(headline)
    report.update(extras)
    report.update({
        "broker_limit_rate": round(limit, 1),
        "ratio_to_limit": round(headline["sustained_rate"] / limit, 3) if limit else None,
        "max_sustainable_rate": best["offered_rate"] if (args.find_max and best) else None,
        "steps": results if args.find_max else None,
    })
    if args.json:
        print(json.dumps(report))
    else:
        print(table(results, limit))
        print("\n".join(ratio_lines(report) + dialects.lines(report)))
        if args.find_max:
            print(f"highest sustainable rate: {report['max_sustainable_rate'] or 'none'} msg/s "
                  f"({args.readings_per_message} reading(s) per message)")
    clean = [headline] + ([report["floor"]] if report.get("floor") else []) + (report.get("dialects") or [])
    return 0 if all(r["lost"] == 0 and r["duplicated"] == 0 for r in clean) else 1


if __name__ == "__main__":
    sys.exit(main())
