"""Fixtures for tests against the real services: each test gets its own database, topics, Redis
prefix, MQTT topic root and consumer group, and removes them afterwards."""
from __future__ import annotations

import copy
import socket
import uuid
from pathlib import Path

import psycopg
import pytest
import redis
import yaml
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry

from migrations import migrate
from pipeline.config import Secrets, Settings, parse
from pipeline.observability.metrics import Metrics
from tests.integration.db_template import create_from_template

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"PostgreSQL": ("127.0.0.1", 5432), "Redis": ("127.0.0.1", 6379), "Mosquitto": ("127.0.0.1", 1883),
            "Kafka": ("127.0.0.1", 9092)}


@pytest.fixture(scope="session", autouse=True)
def services_up():
    down = []
    for name, addr in SERVICES.items():
        try:
            socket.create_connection(addr, timeout=2).close()
        except OSError:
            down.append(f"{name} {addr[0]}:{addr[1]}")
    if down:
        pytest.fail("services not reachable (run `make services`): " + ", ".join(down), pytrace=False)


def deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class Env:
    """One test's isolated names plus handles to the real services."""

    def __init__(self):
        self.run_id = uuid.uuid4().hex[:10]
        rid = self.run_id
        self.root = f"t{rid}"  # MQTT topic root: t<id>/<sensor_id>[/<metric>]
        self.overrides = {
            "instance_id": f"test-{rid}",
            # The broker's drop counter becomes a reading every few seconds: only the tests about it want it.
            "mqtt": {"client_id": f"rp-test-{rid}", "topics": [f"{self.root}/#"], "broker_stats": {"enabled": False}},
            "kafka": {"topics": {"raw": f"t{rid}.sensor-readings", "dead_letter": f"t{rid}.sensor-readings.dlq",
                                 "dead_letter_failed": f"t{rid}.sensor-readings.dlq.failed",
                                 "dead_letter_exhausted": f"t{rid}.sensor-readings.dlq.exhausted"},
                      "consumer_group": f"t{rid}", "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
            "redis": {"key_prefix": f"t{rid}:"},
            "postgres": {"database": f"test_{rid}"},
            "dashboard": {"enabled": False},
            "processing": {"shutdown_timeout_s": 15},
        }
        self.base_tree = yaml.safe_load((ROOT / "config.yaml").read_text())
        self.redis = redis.Redis(decode_responses=True)
        self._dbs: set[str] = set()

    def tree(self, **extra) -> dict:
        return deep_merge(deep_merge(self.base_tree, self.overrides), extra)

    def settings(self, **extra) -> Settings:
        return Settings(config=parse(self.tree(**extra), {}), secrets=Secrets.from_env({}), path="test")

    def write_config(self, path: Path, **extra) -> Path:
        path.write_text(yaml.safe_dump(self.tree(**extra)))
        return path

    def migrate(self, settings: Settings | None = None) -> Settings:
        settings = settings or self.settings()
        create_from_template(settings)  # the migrations below then find nothing to apply
        migrate(settings, out=open("/dev/null", "w"))
        self._dbs.add(settings.config.postgres.database)
        return settings

    def db(self) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", user="postgres", dbname=f"test_{self.run_id}", autocommit=True)

    def query(self, sql: str, params=()) -> list[tuple]:
        with self.db() as conn:
            return conn.execute(sql, params).fetchall()

    def metrics(self) -> Metrics:
        return Metrics(CollectorRegistry())

    def cleanup(self) -> None:
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as conn:
            for name in self._dbs:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        keys = list(self.redis.scan_iter(f"t{self.run_id}:*", count=1000))
        if keys:
            self.redis.delete(*keys)
        admin = AdminClient({"bootstrap.servers": "127.0.0.1:9092"})
        topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"t{self.run_id}")]
        if topics:
            for fut in admin.delete_topics(topics, operation_timeout=10).values():
                try:
                    fut.result(10)
                except Exception:  # noqa: BLE001 - best effort: the names are unique to this run anyway
                    pass


@pytest.fixture
def env():
    e = Env()
    yield e
    e.cleanup()
