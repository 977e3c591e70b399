"""New sensors at the steady rate: readings/s through the real daemon when every sensor is new, against the same
number of readings of sensors already registered.

    python -m pipeline.tools.bench.new_sensors [--sensors 50000] [--readings 2] [--set key=value ...]

Phase "new": `--sensors` ids never seen, `--readings` messages each (one reading a message), are put in the raw
Kafka topic first; the daemon (`realtime_pipeline.py`, a subprocess, the repository's config.yaml with its own
database, topics, Redis prefix and consumer group) is started and consumes them: Kafka -> stages -> PostgreSQL
(registering every sensor) and Redis. Phase "known": the daemon is stopped, the same count of readings of the
same sensors (later timestamps) is put in the topic, and a new daemon consumes them; now every sensor is known.
Each phase is timed from the first row in `measurements` to the last (the daemon's start-up and the produce
are not in it), so the ratio compares the write path only. MQTT is not in the path (the messages go straight
into the raw topic with the bridge's headers): what differs between the phases is downstream of it.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import psycopg
import redis
import yaml
from confluent_kafka import Producer

from ...clients.kafka import ensure_topics, producer_conf
from ...clients.postgres import conninfo
from ...config import Secrets, Settings, parse
from ...ingest.identity import MQTT_TOPIC_HEADER, RECEIVED_US_HEADER
from ...sinks.deadletter import dead_letter_topics
from .configtree import ROOT, deep_merge


def settings_tree(rid: str, extra: list[str]) -> dict:
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    tree = deep_merge(base, {
        "instance_id": f"bench-{rid}", "log_level": "INFO",
        "mqtt": {"topics": [f"bench{rid}/#"], "client_id": f"bench-{rid}", "broker_stats": {"enabled": False}},
        "kafka": {"topics": {"raw": f"bench{rid}.raw", "dead_letter": f"bench{rid}.dlq",
                             "dead_letter_failed": f"bench{rid}.dlq.failed",
                             "dead_letter_exhausted": f"bench{rid}.dlq.exhausted"},
                  "consumer_group": f"bench-{rid}"},
        "redis": {"key_prefix": f"bench{rid}:", "stream_maxlen": 10_000_000},
        "postgres": {"database": f"bench_new_{rid}"},
        "dashboard": {"enabled": False},
    })
    for item in extra:
        key, _, value = item.partition("=")
        node = tree
        *path, leaf = key.split(".")
        for k in path:
            node = node.setdefault(k, {})
        node[leaf] = yaml.safe_load(value)
    return tree


def produce(settings: Settings, root: str, sensors: int, readings: int, t0: float) -> int:
    """`readings` messages of each sensor into the raw topic, as the bridge writes them; returns the count."""
    cfg = settings.config.kafka
    producer = Producer({**producer_conf(cfg, "bench-new-sensors"), "linger.ms": 20, "queue.buffering.max.messages": 500_000})
    now_us = time.time_ns() // 1000
    n = 0
    for k in range(readings):
        for i in range(sensors):
            sensor = f"nsb-{i:06d}"
            topic = f"{root}/{sensor}"
            payload = orjson.dumps({"metric": "temperature", "value": 20.0 + (i % 97) / 10 + k / 1000,
                                    "timestamp": t0 + k, "type": "env", "location": f"hall-{i % 100}"})
            n += 1
            produce_as_bridge(producer, cfg.topics.raw, topic, sensor, payload, now_us + n)
    if producer.flush(60):
        raise RuntimeError("Kafka did not confirm every message in 60 s")
    return n


def produce_as_bridge(producer, raw_topic: str, mqtt_topic: str, sensor: str, payload: bytes, received_us: int) -> None:
    """One message into the raw topic as the MQTT bridge writes it (key, MQTT topic and receive time headers),
    waiting for room when the producer's queue is full."""
    while True:
        try:
            producer.produce(raw_topic, value=payload, key=sensor.encode(),
                             headers=[(MQTT_TOPIC_HEADER, mqtt_topic.encode()), (RECEIVED_US_HEADER, str(received_us).encode())])
            break
        except BufferError:
            producer.poll(0.05)
    producer.poll(0)


def count_rows(conn) -> int:
    return conn.execute("SELECT count(*) FROM measurements").fetchone()[0]


def run_phase(name: str, config_path: Path, log_path: Path, conn, expected_total: int, timeout_s: float) -> float:
    """Start the daemon, time the rows from the first to `expected_total`, stop it; returns readings/s."""
    before = count_rows(conn)
    proc = subprocess.Popen([sys.executable, str(ROOT / "realtime_pipeline.py"), "--config", str(config_path)],
                            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + timeout_s
        first_at = None
        rows = before
        while rows < expected_total:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"phase {name}: {rows - before} of {expected_total - before} rows "
                                   f"(daemon {'exited' if proc.poll() is not None else 'too slow'}; log {log_path})")
            time.sleep(0.05)
            rows = count_rows(conn)
            if first_at is None and rows > before:
                first_at, first_rows = time.monotonic(), rows
        elapsed = time.monotonic() - first_at
        rate = (expected_total - first_rows) / elapsed
        print(f"{name:<6} {expected_total - before:>8,} readings  {elapsed:6.2f} s from the first row to the last  "
              f"{rate:>9,.0f} readings/s", flush=True)
        return rate
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


PER_SENSOR = "INSERT INTO sensors (sensor_id, type, location) VALUES (%s, %s, %s) ON CONFLICT (sensor_id) DO NOTHING"


def statement_cost(settings: Settings, sensors: int, batch: int) -> None:
    """The registration statement alone, in the sink's transaction shape: one INSERT per sensor (executemany,
    which psycopg pipelines) against one INSERT ... unnest per batch, each into an empty `sensors`."""
    from ...storage.sensor_rows import INSERT_SENSORS

    with psycopg.connect(**conninfo(settings.config.postgres, settings.secrets.postgres_password)) as conn:
        for name in ("per sensor", "per batch"):
            conn.execute("DELETE FROM sensors")
            conn.commit()
            started = time.perf_counter()
            for b in range(0, sensors, batch):
                ids = [f"nss-{i:06d}" for i in range(b, min(b + batch, sensors))]
                with conn.transaction(), conn.cursor() as cur:
                    if name == "per sensor":
                        cur.executemany(PER_SENSOR, [(i, "env", "hall") for i in ids])
                    else:
                        cur.execute(INSERT_SENSORS, (ids, ["env"] * len(ids), ["hall"] * len(ids)))
            elapsed = time.perf_counter() - started
            print(f"statement {name:<10} {sensors:,} sensors in batches of {batch}: {elapsed:.2f} s, "
                  f"{sensors / elapsed:,.0f} sensors/s", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.tools.bench.new_sensors", description=__doc__.split("\n\n")[0])
    p.add_argument("--sensors", type=int, default=50_000)
    p.add_argument("--readings", type=int, default=2, help="messages (one reading each) per sensor and phase")
    p.add_argument("--set", action="append", default=[], help="config override, e.g. limits.registration=open")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a phase may take")
    p.add_argument("--keep", action="store_true", help="keep the database and topics")
    p.add_argument("--age-s", type=float, default=0.0, help="event times this many seconds before now")
    p.add_argument("--statement", action="store_true", help="only time the registration statement, no daemon")
    args = p.parse_args(argv)
    rid = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix="bench-new-sensors-"))
    tree = settings_tree(rid, args.set)
    settings = Settings(parse(tree, {}), Secrets.from_env({}), "bench")
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(tree))
    from migrations import migrate

    migrate(settings, out=open("/dev/null", "w"))
    if args.statement:
        try:
            statement_cost(settings, args.sensors, settings.config.processing.batch_size)
        finally:
            cleanup(settings, rid)
        return 0
    kafka = settings.config.kafka
    ensure_topics(kafka, [kafka.topics.raw, *dead_letter_topics(kafka).values()])
    root = f"bench{rid}"
    per_phase = args.sensors * args.readings
    print(f"{args.sensors:,} sensors x {args.readings} readings per phase, {per_phase:,} readings; "
          f"kafka.partitions={kafka.partitions} processing.batch_size={settings.config.processing.batch_size}", flush=True)
    try:
        with psycopg.connect(**conninfo(settings.config.postgres, settings.secrets.postgres_password), autocommit=True) as conn:
            # Event times of now by default: readings older than detection.offline_after_s open an offline
            # alert per sensor, a cost of alerting, not of registration (--age-s measures it).
            produce(settings, root, args.sensors, args.readings, time.time() - args.age_s - args.readings)
            new_rate = run_phase("new", config_path, workdir / "daemon-new.log", conn, per_phase, args.timeout)
            registered = conn.execute("SELECT count(*) FROM sensors WHERE sensor_id LIKE 'nsb-%%'").fetchone()[0]
            produce(settings, root, args.sensors, args.readings, time.time() - args.age_s - args.readings)
            known_rate = run_phase("known", config_path, workdir / "daemon-known.log", conn, 2 * per_phase, args.timeout)
        print(f"sensors registered: {registered:,}; new/known = {new_rate / known_rate:.2f}", flush=True)
    finally:
        if not args.keep:
            cleanup(settings, rid)
    return 0


def cleanup(settings: Settings, rid: str) -> None:
    from confluent_kafka.admin import AdminClient

    cfg = settings.config
    with psycopg.connect(**conninfo(cfg.postgres, settings.secrets.postgres_password, database="postgres"),
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{cfg.postgres.database}" WITH (FORCE)')
    r = redis.Redis(host=cfg.redis.host, port=cfg.redis.port)
    keys = list(r.scan_iter(f"{cfg.redis.key_prefix}*", count=1000))
    for i in range(0, len(keys), 1000):
        r.delete(*keys[i:i + 1000])
    admin = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers})
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"bench{rid}")]
    if topics:
        for fut in admin.delete_topics(topics, operation_timeout=10).values():
            try:
                fut.result(10)
            except Exception:  # noqa: BLE001 - best effort: the names are unique to this run
                pass


if __name__ == "__main__":
    sys.exit(main())
