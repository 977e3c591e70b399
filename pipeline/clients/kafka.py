"""Kafka client settings and topic creation (librdkafka via confluent-kafka)."""
from __future__ import annotations

import logging

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from ..config import KafkaConfig

log = logging.getLogger(__name__)


def client_conf(cfg: KafkaConfig, client_id: str) -> dict:
    conf = {"bootstrap.servers": cfg.bootstrap_servers, "client.id": client_id}
    conf.update(cfg.client)  # security and any other librdkafka property, as the user wrote it
    return conf


def producer_conf(cfg: KafkaConfig, client_id: str) -> dict:
    """Idempotent producer; deliveries retry without a deadline, so an outage is back-pressure, not loss."""
    conf = client_conf(cfg, client_id)
    conf.update({
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": cfg.linger_ms,
        "queue.buffering.max.messages": cfg.producer_queue_max_messages,
        "message.timeout.ms": 0,
    })
    return conf


def consumer_conf(cfg: KafkaConfig, client_id: str) -> dict:
    """Manual offsets: we commit only what every sink holds."""
    conf = client_conf(cfg, client_id)
    conf.update({
        "group.id": cfg.consumer_group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": cfg.session_timeout_ms,
        "heartbeat.interval.ms": cfg.heartbeat_interval_ms,
        "fetch.wait.max.ms": cfg.fetch_wait_max_ms,
        "enable.partition.eof": False,
    })
    return conf


def ensure_topics(cfg: KafkaConfig, topics: list[str], timeout: float = 15.0) -> None:
    """Create the pipeline's topics before anyone subscribes (a consumer would not see a topic that
    appears later until its next metadata refresh, minutes away)."""
    admin = AdminClient(client_conf(cfg, "realtime-pipeline-admin"))
    existing = admin.list_topics(timeout=timeout).topics
    missing = [t for t in topics if t not in existing]
    if not missing:
        return
    futures = admin.create_topics([NewTopic(t, num_partitions=cfg.partitions, replication_factor=cfg.replication_factor)
                                   for t in missing], operation_timeout=timeout, request_timeout=timeout)
    for topic, fut in futures.items():
        try:
            fut.result(timeout)
            log.info("event=topic_created topic=%s partitions=%d", topic, cfg.partitions)
        except KafkaException as err:
            if err.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


def partition_lag(high: dict[int, int], committed: dict[int, int], low: dict[int, int]) -> dict[int, int]:
    """Messages not yet committed per partition; a partition without a commit counts from its low watermark
    (the consumer starts at the earliest offset)."""
    out = {}
    for partition, end in high.items():
        start = committed.get(partition, -1)
        if start < 0:
            start = low.get(partition, 0)
        out[partition] = max(0, end - start)
    return out


def group_lag(admin: AdminClient, topic: str, group: str, timeout: float) -> tuple[dict[int, int], dict[int, int]]:
    """(lag, committed offset) per partition of `topic` for consumer group `group`, as `kafka-consumer-groups`
    shows them. Through an AdminClient: it needs no group membership, so it answers while a join hangs.
    Raises KafkaException, KeyError (no such topic) or concurrent.futures.TimeoutError."""
    md = admin.list_topics(topic=topic, timeout=timeout)
    tps = [TopicPartition(topic, p) for p in sorted(md.topics[topic].partitions)]
    high = {tp.partition: f.result().offset for tp, f in
            admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, request_timeout=timeout).items()}
    result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)],
                                               request_timeout=timeout)[group].result()
    committed = {tp.partition: tp.offset for tp in result.topic_partitions if tp.error is None}
    fresh = [tp for tp in tps if committed.get(tp.partition, -1) < 0]
    low = {tp.partition: f.result().offset for tp, f in
           admin.list_offsets({tp: OffsetSpec.earliest() for tp in fresh}, request_timeout=timeout).items()
           } if fresh else {}
    return partition_lag(high, committed, low), committed
