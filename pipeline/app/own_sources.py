"""Builders of the daemon's own sources: this host's system metrics, its own warnings, the broker's drop counters."""
from __future__ import annotations

import logging

from ..agents.publisher import MqttPublisher
from ..agents.spool import SpooledPublisher, open_spooled, spool_path
from ..agents.system import SystemAgent
from ..clients.redis import connect as redis_connect
from ..config import Settings
from ..ingest.broker_stats import BrokerStats, CounterMemory
from ..ingest.broker_stats import sensor_id as broker_sensor_id
from ..ingest.mqtt_bridge import client_id_suffix
from ..logship import MQTTHandler
from ..observability.metrics import Metrics


def watch_spool(metrics: Metrics, source: str, shipper: SpooledPublisher) -> None:
    """The spool's backlog and drops as metrics, read when scraped."""
    metrics.spool_backlog.labels(source).set_function(lambda: shipper.spool.count)
    metrics.spool_backlog_bytes.labels(source).set_function(lambda: shipper.spool.bytes)
    metrics.spool_dropped.labels(source).set_function(lambda: shipper.dropped)


def build_system_agent(settings: Settings, metrics: Metrics) -> SystemAgent | None:
    """The system agent (agents.system) publishing through its spool, or None when off; the caller starts both."""
    mqtt, agent = settings.config.mqtt, settings.config.agents.system
    if not agent.enabled:
        return None
    publisher = MqttPublisher(mqtt.host, mqtt.port, f"{mqtt.client_id}-system", mqtt.username or None,
                              settings.secrets.mqtt_password.reveal() or None, mqtt.keepalive_s, tls=mqtt.tls)
    # Another process owning the file stops the start: two agents would send each other's samples.
    shipper = open_spooled(publisher, spool_path(agent.spool_path, "daemon-system-agent.db"), agent.spool_max_bytes,
                           "system-agent")
    watch_spool(metrics, "system_agent", shipper)
    samples = metrics.system_samples
    return SystemAgent(shipper, agent.host, agent.topic_root, agent.interval_s, agent.disk_path,
                       on_publish=lambda ok: samples.labels("published" if ok else "dropped").inc())


def build_log_handler(settings: Settings, metrics: Metrics, spawn) -> MQTTHandler | None:
    """The handler that ships the daemon's own warnings (logs.ship_own), or None when off."""
    mqtt, logs = settings.config.mqtt, settings.config.logs
    if not logs.ship_own:
        return None
    handler = MQTTHandler(logs.ship_app, mqtt.host, mqtt.port, level=logging.getLevelName(logs.ship_level),
                          topic_root=logs.topic_root, username=mqtt.username or None,
                          password=settings.secrets.mqtt_password.reveal() or None,
                          max_message_bytes=logs.max_message_bytes, max_extra_bytes=logs.max_extra_bytes,
                          client_id=f"{mqtt.client_id}-logship", spawn=spawn, tls=mqtt.tls,
                          spool_path=logs.ship_spool_path, spool_max_bytes=logs.ship_spool_max_bytes)
    metrics.logship_records.labels("sent").set_function(lambda: handler.sent)
    metrics.logship_records.labels("dropped").set_function(lambda: handler.dropped)
    watch_spool(metrics, "logship", handler.shipper)
    return handler


def build_broker_stats(settings: Settings, metrics: Metrics, inject) -> BrokerStats | None:
    """The broker's own drop counters (mqtt.broker_stats), shown and alerted on, or None when off."""
    cfg = settings.config
    if not cfg.mqtt.broker_stats.enabled:
        return None
    memory = CounterMemory(redis_connect(cfg.redis, settings.secrets.redis_password),
                           f"{cfg.redis.key_prefix}broker_stats:{broker_sensor_id(cfg.mqtt.host)}")
    return BrokerStats(cfg.mqtt, settings.secrets.mqtt_password, metrics, inject,
                       client_id_suffix(cfg.mqtt, cfg.instance_id), memory=memory)
