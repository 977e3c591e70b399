"""A small MQTT publisher for the agents and the log handler: connects and reconnects in the background,
publishes with QoS 1, and never holds more than `max_queued` messages in memory. TLS as the bridge's
(`TlsConfig`, applied by pipeline/clients/mqtt_tls.py)."""
from __future__ import annotations

import logging
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ..clients.mqtt_tls import configure_tls
from ..config import TlsConfig

log = logging.getLogger(__name__)


class MqttPublisher:
    """paho in its own network thread; `publish` never blocks and says False when the queue is full."""

    def __init__(self, host: str = "localhost", port: int = 1883, client_id: str | None = None,
                 username: str | None = None, password: str | None = None, keepalive: int = 30, qos: int = 1,
                 max_queued: int = 1000, tls: TlsConfig | None = None):
        self.host, self.port, self.keepalive, self.qos = host, port, keepalive, qos
        self.client_id = client_id or f"rp-agent-{uuid.uuid4().hex[:12]}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True)
        if username:
            self.client.username_pw_set(username, password or None)
        # Without TLS the password crosses the network in clear: a broker that asks for one should listen on TLS.
        self.tls = tls if tls is not None and tls.enabled else None
        if self.tls is not None:
            configure_tls(self.client, self.tls)
        self.client.max_queued_messages_set(max_queued)
        self.client.reconnect_delay_set(1, 30)
        self.client.on_publish = self._on_publish
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self._warned = False  # log a connection problem once per streak, not on every retry
        self.connected = threading.Event()
        # Called with the paho client after each successful (re)connect: a subscriber subscribes there.
        self.on_connected = None
        # Called with the message id of each acknowledged message, in paho's thread (the spool's pump uses it).
        self.on_ack = None
        self._cond = threading.Condition()
        self.accepted = 0  # messages paho took (sent or queued until connected)
        self.acked = 0  # messages the broker acknowledged

    @property
    def thread_name(self) -> str:
        """The name paho gives its network thread (records logged from it are about the shipping itself)."""
        return f"paho-mqtt-client-{self.client_id}"

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, self.keepalive)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> bool:
        """Hand one message to paho. False if it was refused (queue full): the caller counts it as dropped."""
        return self.send(topic, payload) is not None

    def send(self, topic: str, payload: bytes) -> int | None:
        """Hand one message to paho: its message id, or None if it was refused (queue full)."""
        info = self.client.publish(topic, payload, qos=self.qos)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            return None
        with self._cond:
            self.accepted += 1
        return info.mid

    def _on_connect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            self._on_connect_fail(_client, _userdata, reason_code)
            return
        self._warned = False
        self.connected.set()
        log.info("event=mqtt_connected client_id=%s host=%s port=%d tls=%s", self.client_id, self.host, self.port,
                 self.tls is not None)
        if self.on_connected is not None:
            self.on_connected(_client)

    def _on_connect_fail(self, _client, _userdata, reason=None) -> None:
        if not self._warned:
            self._warned = True
            log.warning("event=mqtt_unreachable client_id=%s host=%s port=%d reason=%s note=retrying", self.client_id,
                        self.host, self.port, reason or "connection_failed")

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        self.connected.clear()
        if reason_code.is_failure and not self._warned:
            self._warned = True
            log.warning("event=mqtt_disconnected client_id=%s reason=%s note=reconnecting", self.client_id, reason_code)

    def _on_publish(self, _client, _userdata, mid, _reason_code, _properties) -> None:
        with self._cond:
            self.acked += 1
            self._cond.notify_all()
        if self.on_ack is not None:
            self.on_ack(mid)

    @property
    def pending(self) -> int:
        """Messages taken but not yet acknowledged by the broker."""
        with self._cond:
            return self.accepted - self.acked

    def wait(self, timeout: float, below: int = 1) -> bool:
        """Wait until fewer than `below` messages are pending; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.accepted - self.acked >= below:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> int:
        """Wait up to `timeout` for acknowledgements, then disconnect. Returns the messages left unacknowledged."""
        self.wait(timeout)
        left = self.pending
        self.client.disconnect()
        self.client.loop_stop()
        return left
