"""A reading's identity starts at the bridge: the receive time, stamped once per MQTT message.

A reading without a device timestamp takes its event time from the receive time, and PostgreSQL's
unique key (sensor_id, metric, timestamp) then decides what is a redelivery. So the stamp must be
unique for distinct messages and the same for a redelivery of one message:

- distinct: microseconds, strictly increasing per bridge (a tie moves on by 1 µs), so a burst of
  readings received in the same millisecond (a device flushing its buffer, a session's queue
  delivered at reconnect, a 100 Hz sensor) stays a burst of distinct readings;
- the same for a Kafka redelivery: the stamp travels in a Kafka header and is read back, never
  taken from the clock again;
- the same for an MQTT resend: the broker resends an unacknowledged QoS 1 message with the DUP flag
  and its original packet id, so the stamp given to that packet id is reused when topic and payload
  match. After a crash the bridge relearns the stamps of its own last records from the raw topic.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

from confluent_kafka import Consumer, KafkaError, TopicPartition

log = logging.getLogger(__name__)

# Headers of a raw-topic record, beside its payload (the MQTT payload, untouched) and key (the sensor id).
MQTT_TOPIC_HEADER = "mqtt_topic"
ORIGINAL_SIZE_HEADER = "original_size"  # set when the bridge truncated an oversized payload
RECEIVED_US_HEADER = "received_us"  # the receive stamp, integer microseconds since the epoch
MID_HEADER = "mqtt_mid"  # the MQTT packet id (QoS 1), to recognise a resend after a crash
BRIDGE_HEADER = "bridge"  # the bridge's MQTT client id: packet ids belong to one broker session


def wall_clock_us() -> int:
    return time.time_ns() // 1000


class ReceiveStamps:
    """Receive stamps for one bridge's MQTT session: unique, strictly increasing, reused for a resend."""

    def __init__(self, clock_us: Callable[[], int] = wall_clock_us):
        self._clock_us = clock_us
        self._last = 0
        # Packet id -> (stamp, topic, hash of payload) of its latest use. Packet ids are 16-bit, so this
        # holds at most 65,535 entries whatever the traffic.
        self._by_mid: dict[int, tuple[int, bytes, int]] = {}
        self.reused = 0  # resends recognised: they keep the stamp of their first delivery

    def stamp(self, topic: bytes, payload: bytes, qos: int, mid: int, dup: bool) -> int:
        """The receive stamp of one MQTT message (µs)."""
        if dup and qos:
            seen = self._by_mid.get(mid)
            if seen is not None and seen[1] == topic and seen[2] == hash(payload):
                self.reused += 1
                return seen[0]
        now = self._clock_us()
        if now <= self._last:
            now = self._last + 1
        self._last = now
        if qos:
            self._by_mid[mid] = (now, topic, hash(payload))
        return now

    def remember(self, mid: int, stamp: int, topic: bytes, payload: bytes) -> None:
        """A message this session produced before (read back from Kafka after a restart)."""
        seen = self._by_mid.get(mid)
        if seen is None or seen[0] < stamp:
            self._by_mid[mid] = (stamp, topic, hash(payload))
        if stamp > self._last:  # stamps stay increasing even if the clock went back across the restart
            self._last = stamp


def own_records(headers: list | None, bridge_id: bytes) -> tuple[int, int, bytes] | None:
    """(packet id, stamp, MQTT topic) of a raw-topic record this bridge produced with a packet id, else None."""
    found: dict[str, bytes] = {}
    for name, value in headers or ():
        found[name] = value
    if found.get(BRIDGE_HEADER) != bridge_id or MID_HEADER not in found or RECEIVED_US_HEADER not in found:
        return None
    return int(found[MID_HEADER]), int(found[RECEIVED_US_HEADER]), found.get(MQTT_TOPIC_HEADER, b"")


def relearn(stamps: ReceiveStamps, records: Iterable[tuple[int, int, bytes, bytes]]) -> int:
    """Feed (mid, stamp, topic, payload) of records read back from Kafka; returns how many."""
    n = 0
    for mid, stamp, topic, payload in records:
        stamps.remember(mid, stamp, topic, payload)
        n += 1
    return n


def read_own_tail(conf: dict, topic: str, bridge_id: bytes, per_partition: int,
                  timeout_s: float = 5.0) -> list[tuple[int, int, bytes, bytes]]:
    """The last `per_partition` records of each partition of `topic` that this bridge produced with a packet id.

    A resend after a crash concerns a message delivered to Kafka within the last moments before the crash
    (its acknowledgement follows the delivery report by a producer poll), so a bounded tail covers it; and
    since the broker hands out packet ids in turn, the previous use of the same id lies 65,535 messages back,
    beyond the tail. Reads with assign() (no group), so it changes no committed offset.
    """
    consumer = Consumer({**conf, "enable.partition.eof": True, "enable.auto.commit": False,
                         "group.id": conf.get("group.id", "realtime-pipeline-tail")})
    out: list[tuple[int, int, bytes, bytes]] = []
    try:
        md = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if md is None or md.error is not None or not md.partitions:
            return out
        tps = []
        for p in md.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if high > low:
                tps.append(TopicPartition(topic, p, max(low, high - per_partition)))
        if not tps:
            return out
        consumer.assign(tps)
        pending = {tp.partition for tp in tps}
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition())
                    continue
                own = own_records(msg.headers(), bridge_id)
                if own is not None:
                    out.append((own[0], own[1], own[2], msg.value() or b""))
        if pending:
            log.warning("event=raw_tail_incomplete partitions=%s note=resends_may_be_stored_twice",
                        ",".join(map(str, sorted(pending))))
    finally:
        consumer.close()
    return out
