"""Inspect and replay dead letters.

    python -m pipeline.tools.dlq list   [--reason R] [--kind invalid|processing_failure|retry_exhausted] [--limit N] [--json]
    python -m pipeline.tools.dlq replay [--reason R] [--kind K] [--limit N]

`list` reads the dead-letter topics from the beginning without joining a consumer group (nothing is
committed, so listing changes nothing). `replay` sends the chosen letters back to the raw topic with their
original key, MQTT topic and receive time, for after a fix: by default only `retry_exhausted` letters (a
record a service refused; invalid input stays invalid until a rule changes, so `--kind` or `--reason` must ask
for it). Each sent message carries the header `replayed_from` = "<dlq topic>:<partition>:<offset>".

Replaying never sends a letter twice: once Kafka confirmed a run's messages, the next offset to look at per
dead-letter topic partition is committed under the consumer group `<kafka.consumer_group>.dlq-replay` (with
assign(), never the group protocol), and a run starts there. A run filtered by `--reason R` keeps its own mark
under `<kafka.consumer_group>.dlq-replay.R`, so the letters of other reasons it passed over stay for a later
run, and every run skips a letter that a reason's mark already covers. A crash between sending and committing
sends those letters again on the next run; PostgreSQL skips readings it already holds.

A failed notification (reason `notification_failed`, stage `alert_notifier`) is a dead letter too, on the
retry-exhausted topic, but its value is the notification ({"channel", "digest", "alerts"}), not a message of
the raw topic, which would refuse it (and lose it). Replay never sends one: a run passes over them (and marks
them dealt with), `--reason notification_failed` is refused, and `list --reason notification_failed` shows them
(the alerts themselves are in PostgreSQL and on the dashboard).

A letter written because a replayed message failed again is a new letter at a new offset: a later replay
(after the next fix) sends it like any other. It is not skipped, because then a second fix could never
bring it back; it cannot loop by itself, since a run reads all its letters before it sends any.
"""
from __future__ import annotations

import argparse
import sys
import uuid
from dataclasses import dataclass
from typing import Iterable, Iterator

import orjson
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, Producer, TopicPartition

from ..config import KafkaConfig, load_for_cli
from ..clients.kafka import producer_conf
from ..ingest.identity import MQTT_TOPIC_HEADER, RECEIVED_US_HEADER
from ..records import EXHAUSTED, FAILED, INVALID
from ..sinks.deadletter import dead_letter_topics
from ..sinks.notify.notifier import DEAD_LETTER_REASON as NOTIFICATION_FAILED
from .progress import Progress

REPLAYED_FROM = "replayed_from"
Position = tuple[str, int]  # (dead-letter topic, partition)
Marks = dict[Position, int]  # the next offset a replay has not dealt with, per position
# Reasons of letters that are not raw-topic messages: never replayed to the raw topic.
NOT_REPLAYABLE = frozenset({NOTIFICATION_FAILED})


@dataclass
class Letter:
    """One dead letter as stored in Kafka."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    payload: bytes
    headers: dict[str, str]

    @property
    def position(self) -> Position:
        return (self.topic, self.partition)

    @property
    def replayable(self) -> bool:
        """False for a letter whose value is not a raw-topic message (a failed notification)."""
        return self.headers.get("reason", "") not in NOT_REPLAYABLE

    def reasons(self) -> list[str]:
        """Its main reason, then the others of its refused readings (header `reasons`, {metric: reason})."""
        out = [self.headers.get("reason", "")]
        try:
            refused = orjson.loads(self.headers.get("reasons") or "{}")
        except orjson.JSONDecodeError:
            refused = {}
        for r in (refused.values() if isinstance(refused, dict) else ()):
            if isinstance(r, str) and r not in out:
                out.append(r)
        return out

    def summary(self) -> dict:
        h = self.headers
        return {"dlq": f"{self.topic}[{self.partition}]@{self.offset}", "kind": h.get("kind", ""),
                "reason": h.get("reason", ""), "stage": h.get("stage", ""), "error": " ".join(h.get("error", "").split()),
                "metrics": [m for m in h.get("metrics", "").split(",") if m], "reasons": self.reasons(),
                "mqtt_topic": h.get("mqtt_topic", ""), "source": f"{h.get('source_topic', '')}[{h.get('source_partition', '')}]@{h.get('source_offset', '')}",
                "attempts": h.get("attempts", ""), "payload": self.payload[:200].decode("utf-8", "replace")}


def _consumer(cfg: KafkaConfig, group: str) -> Consumer:
    # Never subscribe(): offsets are read and committed under `group` with assign() only (no group join).
    # The end of a partition is the consumer's EOF event, from the fetch itself: a queried high watermark can
    # read low on some brokers (the development broker's does: docs in /work/shared/notes/kafka-broker.md).
    return Consumer({"bootstrap.servers": cfg.bootstrap_servers, "group.id": group, "enable.auto.commit": False,
                     "enable.partition.eof": True, "fetch.wait.max.ms": 100, **cfg.client})


def read_letters(cfg: KafkaConfig, kinds: list[str], start: Marks | None = None, timeout: float = 10.0) -> Iterator[Letter]:
    """Every letter currently in the chosen dead-letter topics, oldest first in each partition; from `start`
    where it gives a position. All partitions are read at once: the wait for each one's end is paid once."""
    consumer = _consumer(cfg, f"dlq-reader-{uuid.uuid4().hex[:8]}")
    start = start or {}
    try:
        topics = dead_letter_topics(cfg)
        meta = consumer.list_topics(timeout=timeout).topics
        assignment = []
        for kind in kinds:
            topic = topics[kind]
            for partition in sorted(meta[topic].partitions) if topic in meta else ():
                low, _ = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
                assignment.append(TopicPartition(topic, partition, max(low, start.get((topic, partition), 0))))
        if not assignment:
            return
        consumer.assign(assignment)
        reading = {(tp.topic, tp.partition) for tp in assignment}
        while reading:
            # poll(), not consume(n): consume waits for n messages or the timeout even past the end.
            m = consumer.poll(timeout)
            if m is None:
                break
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    reading.discard((m.topic(), m.partition()))
                continue
            headers = {k: (v or b"").decode("utf-8", "replace") for k, v in (m.headers() or [])}
            yield Letter(m.topic(), m.partition(), m.offset(), m.key(), m.value() or b"", headers)
    finally:
        consumer.close()


def select(letters: Iterable[Letter], reason: str | None, limit: int | None) -> list[Letter]:
    """For `list`: the letters with that reason (main or of any refused reading), at most `limit`."""
    out = []
    for letter in letters:
        if reason and reason not in letter.reasons():
            continue
        out.append(letter)
        if limit and len(out) >= limit:
            break
    return out


def replay_kinds(kinds: list[str] | None, reason: str | None) -> list[str]:
    """What `replay` covers: the kinds asked for; all of them for a `--reason`; else only retry_exhausted."""
    if kinds:
        return kinds
    return [INVALID, FAILED, EXHAUSTED] if reason else [EXHAUSTED]


def plan_replay(letters: Iterable[Letter], reason: str | None, limit: int | None, marks: Marks,
                reason_marks: dict[str, Marks]) -> tuple[list[Letter], Marks]:
    """Pure: the letters to send (in order) and the marks to commit once Kafka confirmed them all.

    `marks` is the mark of unfiltered runs, `reason_marks` those of runs filtered by a reason. A letter below
    either (for any of its reasons) was replayed already and is skipped. The returned marks are for the run's
    own group (`reason`'s, or the unfiltered one): just past the last letter it dealt with per position, where
    "dealt with" is sent, skipped as already replayed or, in a filtered run, of another reason. A `limit` stops
    the run at its last letter sent, so nothing after it is marked."""
    send: list[Letter] = []
    new: Marks = {}
    own = reason_marks.get(reason, {}) if reason else marks
    for letter in letters:
        pos, offset = letter.position, letter.offset
        if offset < own.get(pos, 0):
            continue
        if limit and len(send) >= limit:
            break
        if not letter.replayable:  # never sent to the raw topic: dealt with
            new[pos] = offset + 1
            continue
        reasons = letter.reasons()
        done = offset < marks.get(pos, 0) or any(offset < reason_marks.get(r, {}).get(pos, 0) for r in reasons)
        if not done and (reason is None or reason in reasons):
            send.append(letter)
        new[pos] = offset + 1
    return send, new


def replay_group(cfg: KafkaConfig, reason: str | None = None) -> str:
    """The consumer group whose committed offsets are replay's marks (lag tools show them)."""
    return f"{cfg.consumer_group}.dlq-replay" + (f".{reason}" if reason else "")


def read_marks(cfg: KafkaConfig, group: str, positions: list[Position], timeout: float = 10.0) -> Marks:
    consumer = _consumer(cfg, group)
    try:
        got = consumer.committed([TopicPartition(t, p) for t, p in positions], timeout=timeout)
    finally:
        consumer.close()
    return {(tp.topic, tp.partition): tp.offset for tp in got if tp.error is None and tp.offset != OFFSET_INVALID and tp.offset >= 0}


def commit_marks(cfg: KafkaConfig, group: str, marks: Marks, timeout: float = 10.0) -> None:
    consumer = _consumer(cfg, group)
    try:
        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(marks.items())]
        consumer.assign(offsets)
        consumer.commit(offsets=offsets, asynchronous=False)
    finally:
        consumer.close()


def positions(cfg: KafkaConfig, kinds: list[str], timeout: float = 10.0) -> list[Position]:
    """Every partition of the chosen dead-letter topics that exist."""
    consumer = _consumer(cfg, f"dlq-reader-{uuid.uuid4().hex[:8]}")
    try:
        meta = consumer.list_topics(timeout=timeout).topics
    finally:
        consumer.close()
    topics = dead_letter_topics(cfg)
    return [(topics[k], p) for k in kinds if topics[k] in meta for p in sorted(meta[topics[k]].partitions)]


def replay_command(cfg: KafkaConfig, kinds: list[str], reason: str | None, limit: int | None) -> tuple[int, int]:
    """Send what no replay sent yet; commit the marks if Kafka confirmed everything. Returns (sent, chosen)."""
    where = positions(cfg, kinds)
    if not where:
        return 0, 0
    marks = read_marks(cfg, replay_group(cfg), where)
    reason_marks = {reason: read_marks(cfg, replay_group(cfg, reason), where)} if reason else {}
    own = reason_marks[reason] if reason else marks
    start = {pos: max(marks.get(pos, 0), own.get(pos, 0)) for pos in where}
    letters = list(read_letters(cfg, kinds, start))
    for r in sorted({r for letter in letters for r in letter.reasons()} - set(reason_marks)):
        reason_marks[r] = read_marks(cfg, replay_group(cfg, r), where)
    chosen, new_marks = plan_replay(letters, reason, limit, marks, reason_marks)
    held = sum(1 for letter in letters if not letter.replayable and letter.offset >= own.get(letter.position, 0))
    if held:
        print(f"replay: {held} {NOTIFICATION_FAILED} letter(s) passed over: a failed notification is not a raw "
              "message (see them with: list --reason notification_failed)", file=sys.stderr)
    sent = replay(cfg, chosen)
    if sent == len(chosen) and new_marks:
        commit_marks(cfg, replay_group(cfg, reason), new_marks)
    return sent, len(chosen)


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

    bar = Progress("replay", len(letters), "letters")
    for letter in letters:
        bar.update(1, confirmed=confirmed[0], failed=len(errors))
        producer.poll(0)  # delivery reports as they come, for the progress
        h = letter.headers
        headers = [(MQTT_TOPIC_HEADER, h.get("mqtt_topic", "").encode()),
                   (REPLAYED_FROM, f"{letter.topic}:{letter.partition}:{letter.offset}".encode())]
        # The receive stamp goes back as it was: a reading without a device timestamp keeps its identity, so a
        # letter replayed twice, or replayed after its reading was stored after all, is not stored again.
        received_us = round(float(h.get("received_at") or 0) * 1_000_000)
        if received_us > 0:
            headers.append((RECEIVED_US_HEADER, str(received_us).encode()))
        kwargs = {"timestamp": received_us // 1000} if received_us > 0 else {}
        producer.produce(cfg.topics.raw, value=letter.payload, key=letter.key, headers=headers,
                         on_delivery=delivered, **kwargs)
    producer.flush(30)
    bar.update(0, confirmed=confirmed[0], failed=len(errors))
    bar.close()
    if errors:
        print(f"replay: {len(errors)} failed, first: {errors[0]}; nothing marked as replayed", file=sys.stderr)
    return confirmed[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.tools.dlq", description="Inspect and replay dead letters.")
    p.add_argument("--config", help="config file (default: config.yaml)")
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("list", "replay"):
        s = sub.add_parser(name)
        s.add_argument("--reason", help="only letters with this reason (e.g. invalid_json), main or of a refused reading")
        s.add_argument("--kind", choices=[INVALID, FAILED, EXHAUSTED], action="append",
                       help="reason class; repeat for several (default: all for list; for replay retry_exhausted, "
                            "or all with --reason)")
        s.add_argument("--limit", type=int, default=None)
        if name == "list":
            s.add_argument("--json", action="store_true", help="one JSON object per line")
    args = p.parse_args(argv)
    cfg = load_for_cli(args.config).config.kafka
    if args.command == "replay":
        if args.reason in NOT_REPLAYABLE:
            print(f"replay: {args.reason} letters are not raw messages and are never replayed; "
                  f"list them with: list --reason {args.reason}", file=sys.stderr)
            return 2
        sent, chosen = replay_command(cfg, replay_kinds(args.kind, args.reason), args.reason, args.limit)
        print(f"replayed {sent} of {chosen} dead letter(s) to {cfg.topics.raw}")
        return 0 if sent == chosen else 1
    letters = select(read_letters(cfg, args.kind or [INVALID, FAILED, EXHAUSTED]), args.reason, args.limit)
    for letter in letters:
        row = letter.summary()
        if args.json:
            sys.stdout.write(orjson.dumps(row).decode() + "\n")
        else:
            metrics = f"  metrics={len(row['metrics'])}:{','.join(row['metrics'])[:80]}" if row["metrics"] else ""
            print(f"{row['dlq']}  {row['kind']}/{row['reason']}  stage={row['stage']}  topic={row['mqtt_topic']}{metrics}  "
                  f"payload={row['payload'][:80]!r}  error={row['error'][:120]}")
    print(f"{len(letters)} dead letter(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
