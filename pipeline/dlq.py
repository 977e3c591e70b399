"""Inspect and replay dead letters.

    python -m pipeline.dlq list   [--reason R] [--kind invalid|processing_failure|retry_exhausted] [--limit N] [--json]
    python -m pipeline.dlq replay [--reason R] [--kind K] [--limit N]

`list` reads the dead-letter topics from the beginning without joining a consumer group (nothing is
committed, so listing changes nothing). `replay` sends the matching letters back to the raw topic
with their original key, MQTT topic and receive time, for after a fix. Replaying is safe to repeat:
PostgreSQL skips readings it already holds.
"""
from __future__ import annotations

import argparse
import sys
import uuid
from dataclasses import dataclass
from typing import Iterator

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from .config import KafkaConfig, load_for_cli
from .ingest.kafka import producer_conf
from .ingest.mqtt_bridge import MQTT_TOPIC_HEADER
from .records import EXHAUSTED, FAILED, INVALID
from .sinks.deadletter import dead_letter_topics


@dataclass
class Letter:
    """One dead letter as stored in Kafka."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    payload: bytes
    headers: dict[str, str]

    def summary(self) -> dict:
        h = self.headers
        return {"dlq": f"{self.topic}[{self.partition}]@{self.offset}", "kind": h.get("kind", ""),
                "reason": h.get("reason", ""), "stage": h.get("stage", ""), "error": " ".join(h.get("error", "").split()),
                "mqtt_topic": h.get("mqtt_topic", ""), "source": f"{h.get('source_topic', '')}[{h.get('source_partition', '')}]@{h.get('source_offset', '')}",
                "attempts": h.get("attempts", ""), "payload": self.payload[:200].decode("utf-8", "replace")}


def read_letters(cfg: KafkaConfig, kinds: list[str], timeout: float = 10.0) -> Iterator[Letter]:
    """Every letter currently in the chosen dead-letter topics, partition by partition, oldest first."""
    consumer = Consumer({"bootstrap.servers": cfg.bootstrap_servers, "group.id": f"dlq-reader-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, **cfg.client})
    try:
        topics = dead_letter_topics(cfg)
        meta = consumer.list_topics(timeout=timeout).topics
        for kind in kinds:
            topic = topics[kind]
            if topic not in meta:
                continue
            for partition in meta[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
                if high <= low:
                    continue
                consumer.assign([TopicPartition(topic, partition, low)])
                next_offset = low
                while next_offset < high:
                    # consume() waits until it has that many messages or the timeout: ask only for what is there.
                    msgs = consumer.consume(min(500, high - next_offset), timeout)
                    if not msgs:
                        break
                    for m in msgs:
                        if m.error() is not None:
                            continue
                        next_offset = m.offset() + 1
                        headers = {k: (v or b"").decode("utf-8", "replace") for k, v in (m.headers() or [])}
                        yield Letter(topic, partition, m.offset(), m.key(), m.value() or b"", headers)
                consumer.unassign()
    finally:
        consumer.close()


def select(letters: Iterator[Letter], reason: str | None, limit: int | None) -> list[Letter]:
    out = []
    for letter in letters:
        if reason and letter.headers.get("reason") != reason:
            continue
        out.append(letter)
        if limit and len(out) >= limit:
            break
    return out


def replay(cfg: KafkaConfig, letters: list[Letter]) -> int:
    """Produce the letters to the raw topic as the bridge would have; returns how many Kafka confirmed."""
    producer = Producer(producer_conf(cfg, "dlq-replay"))
    confirmed = [0]
    errors: list = []

    def delivered(err, _msg):
        if err is None:
            confirmed[0] += 1
        else:
            errors.append(err)

    for letter in letters:
        h = letter.headers
        headers = [(MQTT_TOPIC_HEADER, h.get("mqtt_topic", "").encode()),
                   ("replayed_from", f"{letter.topic}:{letter.partition}:{letter.offset}".encode())]
        received_ms = int(float(h.get("received_at") or 0) * 1000) or None
        kwargs = {"timestamp": received_ms} if received_ms else {}
        producer.produce(cfg.topics.raw, value=letter.payload, key=letter.key, headers=headers,
                         on_delivery=delivered, **kwargs)
    producer.flush(30)
    if errors:
        print(f"replay: {len(errors)} failed, first: {errors[0]}", file=sys.stderr)
    return confirmed[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.dlq", description="Inspect and replay dead letters.")
    p.add_argument("--config", help="config file (default: config.yaml)")
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("list", "replay"):
        s = sub.add_parser(name)
        s.add_argument("--reason", help="only letters with this reason (e.g. invalid_json)")
        s.add_argument("--kind", choices=[INVALID, FAILED, EXHAUSTED], action="append",
                       help="reason class; repeat for several (default: all)")
        s.add_argument("--limit", type=int, default=None)
        if name == "list":
            s.add_argument("--json", action="store_true", help="one JSON object per line")
    args = p.parse_args(argv)
    cfg = load_for_cli(args.config).config.kafka
    kinds = args.kind or [INVALID, FAILED, EXHAUSTED]
    letters = select(read_letters(cfg, kinds), args.reason, args.limit)
    if args.command == "list":
        for letter in letters:
            row = letter.summary()
            if args.json:
                sys.stdout.write(orjson.dumps(row).decode() + "\n")
            else:
                print(f"{row['dlq']}  {row['kind']}/{row['reason']}  stage={row['stage']}  topic={row['mqtt_topic']}  "
                      f"payload={row['payload'][:80]!r}  error={row['error'][:120]}")
        print(f"{len(letters)} dead letter(s)", file=sys.stderr)
        return 0
    count = replay(cfg, letters)
    print(f"replayed {count} of {len(letters)} dead letter(s) to {cfg.topics.raw}")
    return 0 if count == len(letters) else 1


if __name__ == "__main__":
    sys.exit(main())
