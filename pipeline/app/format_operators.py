"""Format operators (pipeline/registry/formats.py `Format.operator`) made for the selected formats, with what they
are handed: the config, a PostgreSQL connection factory (their durable store), the right to publish over MQTT
(one client of their own, pipeline/agents/publisher.py) and retries that end when the daemon stops.

The Sparkplug B host's STATE messages ride on that client: with `sparkplug.host_id` set its will says offline, each
connect says online (retained), and `close` says offline before disconnecting."""
from __future__ import annotations

import logging
import threading
import time

import psycopg

from ..agents.publisher import MqttPublisher
from ..clients.postgres import conninfo
from ..config import Settings
from ..observability.metrics import Metrics
from ..operators.sparkplug import SPARKPLUG  # noqa: F401 - registers the sparkplug formats
from ..operators.sparkplug.state import state_payload, state_topic
from ..registry.formats import OperatorServices, registered
from ..runtime.format_operator import FormatOperatorStage, retrying

log = logging.getLogger(__name__)


class FormatOperators:
    """The selected formats' operators as stages, their MQTT client and their lifecycle."""

    def __init__(self, settings: Settings, metrics: Metrics):
        cfg = settings.config
        self.settings = settings
        self.stop_event = threading.Event()
        formats = registered()
        wanted = [formats[n] for n in cfg.processing.formats if n in formats and formats[n].operator is not None]
        self.mqtt: MqttPublisher | None = None
        self.host_id = cfg.sparkplug.host_id
        self._state_ts = int(time.time() * 1000)
        if wanted:
            m = cfg.mqtt
            self.mqtt = MqttPublisher(m.host, m.port, f"{m.client_id}-{cfg.instance_id or 'host'}-ops", m.username,
                                      settings.secrets.mqtt_password.reveal() or None,
                                      tls=m.tls)
            if self.host_id:
                self.mqtt.client.will_set(state_topic(self.host_id), state_payload(False, self._state_ts), qos=1,
                                          retain=True)
                self.mqtt.on_connected = self._online
        info = conninfo(cfg.postgres, settings.secrets.postgres_password)
        services = OperatorServices(cfg, metrics, lambda: psycopg.connect(**info, autocommit=True), self.publish,
                                    retrying(cfg.retry, self.stop_event, metrics))
        self.stages = [FormatOperatorStage(f.name, f.operator(services), metrics) for f in wanted]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> bool:
        """QoS 1; False when the client's queue is full or there is no client."""
        if self.mqtt is None:
            return False
        info = self.mqtt.client.publish(topic, payload, qos=1, retain=retain)
        return info.rc in (0, 4)  # sent, or queued until connected (MQTT_ERR_NO_CONN)

    def _online(self, client) -> None:
        client.publish(state_topic(self.host_id), state_payload(True, self._state_ts), qos=1, retain=True)
        log.info("event=sparkplug_state online=true host_id=%s", self.host_id)

    def start(self) -> None:
        for stage in self.stages:
            stage.start()
        if self.mqtt is not None:
            self.mqtt.start()

    def stop(self) -> None:
        """Retries end (the consumer thread is let go)."""
        self.stop_event.set()

    def close(self, timeout: float = 2.0) -> None:
        for stage in self.stages:
            stage.close()
        if self.mqtt is not None:
            if self.host_id and self.mqtt.connected.is_set():
                self.publish(state_topic(self.host_id), state_payload(False, self._state_ts), True)
            self.mqtt.close(timeout)
