"""Kafka client settings and topic creation (librdkafka via confluent-kafka)."""
from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from ..config import KafkaConfig

log = logging.getLogger(__name__)


def _base(cfg: KafkaConfig, client_id: str) -> dict:
    conf = {"bootstrap.servers": cfg.bootstrap_servers, "client.id": client_id}
    conf.update(cfg.client)  # security and any other librdkafka property, as the user wrote it
    return conf


def producer_conf(cfg: KafkaConfig, client_id: str) -> dict:
    """Idempotent producer; deliveries retry without a deadline, so an outage is back-pressure, not loss."""
    conf = _base(cfg, client_id)
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
    conf = _base(cfg, client_id)
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
    admin = AdminClient(_base(cfg, "realtime-pipeline-admin"))
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
