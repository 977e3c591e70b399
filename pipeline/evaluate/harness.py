"""The evaluation's runner: the real daemon (`python realtime_pipeline.py --config TMP`) on its own database,
Kafka topics, Redis key prefix, MQTT topic root and consumer group, fed by the simulator, then asked
for its `alerts` table. Everything it made is removed afterwards (unless kept).
"""
from __future__ import annotations

import copy
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator

import psycopg
import yaml

from .scoring import Alert

log = logging.getLogger("pipeline.evaluate")
ROOT = Path(__file__).resolve().parents[2]
ALERTS_SQL = "SELECT sensor_id, metric, type, timestamp FROM alerts ORDER BY timestamp, id"


def deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def epoch(ts: datetime) -> float:
    """A TIMESTAMP column (UTC without zone) as epoch seconds."""
    return ts.replace(tzinfo=timezone.utc).timestamp()


class Daemon:
    """One isolated daemon: its config (config.yaml plus `extra` and unique names), database and process."""

    def __init__(self, extra: dict, config_path: Path | None = None, keep: bool = False):
        self.run_id = uuid.uuid4().hex[:10]
        rid = self.run_id
        self.root = f"ev{rid}"  # MQTT topic root
        self.keep = keep
        self.dir = Path(tempfile.mkdtemp(prefix=f"evaluate-{rid}-"))
        names = {
            "instance_id": f"evaluate-{rid}",
            "mqtt": {"client_id": f"rp-eval-{rid}", "clean_session": True, "topics": [f"{self.root}/#"],
                     "broker_stats": {"enabled": False}},
            "kafka": {"topics": {"raw": f"ev{rid}.sensor-readings", "dead_letter": f"ev{rid}.sensor-readings.dlq",
                                 "dead_letter_failed": f"ev{rid}.sensor-readings.dlq.failed",
                                 "dead_letter_exhausted": f"ev{rid}.sensor-readings.dlq.exhausted"},
                      "consumer_group": f"ev{rid}"},
            "redis": {"key_prefix": f"ev{rid}:"},
            "postgres": {"database": f"evaluate_{rid}"},
            "dashboard": {"enabled": False},
            "agents": {"system": {"enabled": False}},
        }
        base = yaml.safe_load((config_path or ROOT / "config.yaml").read_text())
        self.tree = deep_merge(deep_merge(base, extra), names)
        self.config_path = self.dir / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(self.tree))
        self.log_path = self.dir / "daemon.log"
        self.proc: subprocess.Popen | None = None
        self.migrated = False

    @property
    def pg(self) -> dict:
        return self.tree["postgres"]

    def start(self, ready_timeout_s: float = 60.0) -> "Daemon":
        """Migrate the database, start the daemon, wait until it has its partitions and its MQTT subscription."""
        from migrations import migrate
        from pipeline.config import Secrets, Settings, parse

        settings = Settings(config=parse(self.tree, {}), secrets=Secrets.from_env({}), path=str(self.config_path))
        with open(self.dir / "migrate.log", "w") as out:
            migrate(settings, out=out)
        self.migrated = True
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "realtime_pipeline.py"), "--config", str(self.config_path)],
                                     stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            text = self.log_text()
            if "event=partitions_assigned" in text and "event=mqtt_subscribed" in text:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"daemon not ready (log {self.log_path}):\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _db(self) -> psycopg.Connection:
        pg = self.pg
        return psycopg.connect(host=pg["host"], port=pg["port"], user=pg["user"], dbname=pg["database"], autocommit=True)

    def alerts(self) -> list[Alert]:
        """Every alert row the daemon stored, open or resolved."""
        with self._db() as conn:
            rows = conn.execute(ALERTS_SQL).fetchall()
        return [Alert(sensor, metric, type_, epoch(ts)) for sensor, metric, type_, ts in rows]

    def raw_count(self) -> int:
        """Messages in the daemon's raw topic so far (what its MQTT bridge has taken from the broker)."""
        from confluent_kafka import Consumer, TopicPartition

        k = self.tree["kafka"]
        if getattr(self, "_probe", None) is None:
            self._probe = Consumer({"bootstrap.servers": k["bootstrap_servers"], "group.id": f"{k['consumer_group']}-count",
                                    "enable.auto.commit": False})
        topic = k["topics"]["raw"]
        return sum(self._probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in range(k["partitions"]))

    def stored_readings(self) -> int:
        """Rows in `measurements`: every reading sent should be there (duplicates are skipped)."""
        with self._db() as conn:
            return conn.execute("SELECT count(*) FROM measurements").fetchone()[0]

    def wait_processed(self, timeout_s: float = 600.0, stable_s: float = 3.0) -> None:
        """Wait until the raw topic stopped growing and the consumer group committed all of it: every sink,
        the alert evaluator included, has taken every reading (offsets are committed only after them)."""
        from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
        from confluent_kafka.admin import AdminClient

        k = self.tree["kafka"]
        topic, group, bootstrap = k["topics"]["raw"], k["consumer_group"], k["bootstrap_servers"]
        admin = AdminClient({"bootstrap.servers": bootstrap})
        probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{group}-probe", "enable.auto.commit": False})
        try:
            last, since = None, time.monotonic()
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                high = {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                        for p in range(k["partitions"])}
                [future] = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)]).values()
                done = {tp.partition: tp.offset for tp in future.result(10).topic_partitions if tp.topic == topic}
                if high != last:
                    last, since = high, time.monotonic()
                caught_up = all(done.get(p, 0) >= h for p, h in high.items())
                if caught_up and time.monotonic() - since >= stable_s:
                    return
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"daemon exited:\n{self.log_text()[-3000:]}")
                time.sleep(0.5)
            raise TimeoutError(f"the daemon did not process everything within {timeout_s:g} s")
        finally:
            probe.close()

    def stop(self) -> None:
        """SIGTERM the daemon, then remove its database, topics and keys (unless kept)."""
        if getattr(self, "_probe", None) is not None:
            self._probe.close()
            self._probe = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if not self.keep:
            self._cleanup()

    def _cleanup(self) -> None:
        import redis
        from confluent_kafka.admin import AdminClient

        shutil.rmtree(self.dir, ignore_errors=True)
        pg = self.pg
        if self.migrated:
            with psycopg.connect(host=pg["host"], port=pg["port"], user=pg["user"], dbname="postgres",
                                 autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg["database"]}" WITH (FORCE)')
        r = self.tree["redis"]
        client = redis.Redis(host=r["host"], port=r["port"], db=r["db"])
        keys = list(client.scan_iter(f"ev{self.run_id}:*", count=1000))
        if keys:
            client.delete(*keys)
        admin = AdminClient({"bootstrap.servers": self.tree["kafka"]["bootstrap_servers"]})
        topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"ev{self.run_id}")]
        for fut in (admin.delete_topics(topics, operation_timeout=10).values() if topics else ()):
            try:
                fut.result(10)
            except Exception:  # noqa: BLE001 - best effort: the names are unique to this run
                pass

    def __enter__(self) -> "Daemon":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def publisher(daemon: Daemon):
    """The simulator's MQTT publisher (QoS 1, acknowledgements counted), connected to the daemon's broker."""
    from pipeline.tools.sim_publisher import Publisher

    m = daemon.tree["mqtt"]
    pub = Publisher(SimpleNamespace(qos=1, host=m["host"], port=m["port"]), f"ev-sim-{daemon.run_id}")
    pub.connect()
    return pub


def replay(publish: Callable[[str, bytes], None], messages: Iterator[tuple[str, bytes] | None], rate: float,
           arrived: Callable[[], int] | None = None, max_backlog: int = 500,
           clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> int:
    """Publish pre-stamped messages (simulated time) at up to `rate` per second of wall clock; returns how many.
    With `arrived` (messages the daemon has taken so far), never more than `max_backlog` ahead of it: a broker
    drops QoS 1 messages beyond a client's queue limit (Mosquitto: 1000), and a lost reading is not a miss of
    the detectors."""
    start, sent = clock(), 0
    for message in messages:
        if message is None:
            continue
        publish(*message)
        sent += 1
        if sent % 100 == 0:
            ahead = start + sent / rate - clock()
            if ahead > 0:
                sleep(ahead)
            if arrived is not None and sent % 200 == 0:
                _wait_backlog(sent, arrived, max_backlog, clock, sleep)
    return sent


def _wait_backlog(sent: int, arrived: Callable[[], int], max_backlog: int, clock, sleep, stall_s: float = 10.0) -> None:
    """Wait while more than `max_backlog` messages are on their way; if none arrives for `stall_s` they were
    lost (the run goes on, and the lost readings are counted at the end)."""
    last, since = arrived(), clock()
    while sent - last > max_backlog:
        sleep(0.02)
        now_arrived = arrived()
        if now_arrived != last:
            last, since = now_arrived, clock()
        elif clock() - since > stall_s:
            log.warning("event=replay_stalled sent=%d arrived=%d", sent, last)
            return
