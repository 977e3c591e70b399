"""The bare path: what the pipeline's route costs with none of its features, measured beside it.

    python -m pipeline.tools.bench.floor --config bench-config.yaml

The same client libraries, used through their public APIs the plain way, on the same route as the
daemon: MQTT QoS 1 receive (paho, manual acknowledgement) -> Kafka produce (idempotent, acks=all, the
MQTT acknowledgement sent only after Kafka confirmed delivery) -> Kafka consume -> JSON decode -> COPY
into a plain table and XADD to a stream -> commit the consumed offsets. Nothing else: no validation, no
reading identity, no deduplication, no aggregation, no alerts, no metrics, no retries, no dead letters.

The benchmark drives it with the same load as the daemon and reads its output with the same observers
(the `floor_readings` table, the `<prefix>floor` stream), so `daemon CPU / floor CPU` per message is
the overhead the pipeline's features cost on this machine, whatever the machine.

It logs the same readiness lines as the daemon (event=mqtt_subscribed, event=partitions_assigned).
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import psycopg
import redis
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from ...clients.postgres import conninfo
from ...config import Secrets, parse

log = logging.getLogger("pipeline.floor")

TABLE = "floor_readings"
STREAM_SUFFIX = "floor"
CREATE = (f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, sensor_id text NOT NULL, "
          "metric text NOT NULL, value double precision NOT NULL, timestamp timestamp NOT NULL)")
COPY = f"COPY {TABLE} (sensor_id, metric, value, timestamp) FROM STDIN"
BATCH = 5000


def rows_of(key: bytes, payload: bytes) -> list[tuple[str, str, float, float]]:
    """(sensor, metric, value, event time) of one message, either payload shape; nothing checked."""
    doc = orjson.loads(payload)
    sensor = key.decode()
    if "readings" in doc:
        return [(sensor, metric, value, doc["timestamp"]) for metric, value in doc["readings"].items()]
    return [(sensor, doc["metric"], doc["value"], doc["timestamp"])]


class Floor:
    def __init__(self, cfg):
        self.cfg = cfg
        k = cfg.kafka
        self.topic = k.topics.raw
        self.stop = threading.Event()
        self.producer = Producer({"bootstrap.servers": k.bootstrap_servers, "enable.idempotence": True,
                                  "acks": "all", "linger.ms": k.linger_ms})
        self.consumer = Consumer({"bootstrap.servers": k.bootstrap_servers, "group.id": k.consumer_group,
                                  "enable.auto.commit": False, "fetch.wait.max.ms": k.fetch_wait_max_ms})
        self.mqtt = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.mqtt.client_id, clean_session=True,
                                manual_ack=True)
        self.mqtt.on_connect = self._on_connect
        self.mqtt.on_subscribe = lambda *_: log.info("event=mqtt_subscribed")
        self.mqtt.on_message = self._on_message
        self.pg = psycopg.connect(**conninfo(cfg.postgres, Secrets.from_env({}).postgres_password))
        self.pg.execute(CREATE)
        self.pg.commit()
        self.redis = redis.Redis(host=cfg.redis.host, port=cfg.redis.port, db=cfg.redis.db)
        self.stream = f"{cfg.redis.key_prefix}{STREAM_SUFFIX}"

    # -- MQTT -> Kafka, in paho's network thread -----------------------------------------------
    def _on_connect(self, client, _userdata, _flags, _reason, _properties) -> None:
        client.subscribe([(t, 1) for t in self.cfg.mqtt.topics])

    def _on_message(self, client, _userdata, msg) -> None:
        mid, qos = msg.mid, msg.qos
        key = msg.topic.split("/", 2)[1].encode()  # the sensor id level: one sensor stays in one partition
        self.producer.produce(self.topic, msg.payload, key,
                              on_delivery=lambda err, _m: err is None and client.ack(mid, qos))
        self.producer.poll(0)

    def bridge(self) -> None:
        self.mqtt.connect(self.cfg.mqtt.host, self.cfg.mqtt.port, keepalive=30)
        while not self.stop.is_set():
            self.mqtt.loop(timeout=0.01)
            self.producer.poll(0)  # deliveries that came in while no message did: acknowledge them too
        self.producer.flush(10)
        self.mqtt.disconnect()

    # -- Kafka -> PostgreSQL + Redis ------------------------------------------------------------
    def sink(self) -> None:
        partitions = len(AdminClient({"bootstrap.servers": self.cfg.kafka.bootstrap_servers})
                         .list_topics(self.topic, timeout=10).topics[self.topic].partitions)
        self.consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        log.info("event=partitions_assigned partitions=%s", ",".join(map(str, range(partitions))))
        utc = timezone.utc
        while not self.stop.is_set():
            msgs = self.consumer.consume(BATCH, 0.1)
            if not msgs:
                continue
            rows = [r for m in msgs if m.error() is None for r in rows_of(m.key(), m.value())]
            with self.pg.cursor() as cur, cur.copy(COPY) as copy:
                for sensor, metric, value, ts in rows:
                    copy.write_row((sensor, metric, value, datetime.fromtimestamp(ts, utc).replace(tzinfo=None)))
            self.pg.commit()
            pipe = self.redis.pipeline(transaction=False)
            for sensor, metric, value, ts in rows:
                pipe.xadd(self.stream, {"id": f"{sensor}|{metric}|{ts!r}", "sensor_id": sensor, "metric": metric,
                                        "value": value, "ts": ts})
            pipe.execute()
            self.consumer.commit(asynchronous=True)
        self.consumer.close()


def ensure_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic not in admin.list_topics(timeout=10).topics:
        for fut in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
            fut.result(15)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.tools.bench.floor", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    cfg = parse(yaml.safe_load(args.config.read_text()), {})
    ensure_topic(cfg.kafka.bootstrap_servers, cfg.kafka.topics.raw, cfg.kafka.partitions)
    floor = Floor(cfg)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: floor.stop.set())
    sink = threading.Thread(target=floor.sink, name="floor-sink")
    sink.start()
    floor.bridge()
    sink.join(30)
    log.info("event=stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
