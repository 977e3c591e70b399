"""The simulator's MQTT side: one paho client that publishes without blocking and counts acknowledgements,
and the stop flag a signal handler sets. Used by the simulator (simulate.py) and the evaluation's replay."""
from __future__ import annotations

import logging
import socket
import threading
import time

import paho.mqtt.client as mqtt

log = logging.getLogger("pipeline.tools.simulate")

ACK_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0


class StopFlag:
    """Set from a signal handler: a plain attribute, because taking a lock there can deadlock the main thread."""

    def __init__(self) -> None:
        self.stopping = False

    def set(self, *_: object) -> None:
        self.stopping = True

    def is_set(self) -> bool:
        return self.stopping


class Publisher:
    """One paho client: connects, publishes without blocking, counts broker acknowledgements."""

    def __init__(self, opts: Options, client_id: str):
        self.qos = opts.qos
        self.attempted = 0
        self._acked = 0
        self._lock = threading.Lock()  # on_publish can run in the loop thread and, for QoS 0, in ours
        self._connected = threading.Event()
        self._connect_rc: object = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)  # unlimited: a slow broker shows up as ack wait, not lost messages
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.host, self.port = opts.host, opts.port

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connect_rc = reason_code
        if not reason_code.is_failure:
            self._connected.set()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            self._acked += 1

    @property
    def acked(self) -> int:
        """Publishes the broker acknowledged so far."""
        with self._lock:
            return self._acked

    def connect(self) -> None:
        """Connect and start the network thread; raise ConnectionError if the broker does not accept us."""
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as err:
            raise ConnectionError(f"mqtt broker {self.host}:{self.port} unreachable: {err}") from err
        sock = self.client.socket()
        if sock is not None:
            # Nagle holds the last small PUBLISH until the broker's delayed ACK (~40 ms): visible as ack lag at the end.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.loop_start()
        if not self._connected.wait(CONNECT_TIMEOUT_S):
            self.client.loop_stop()
            raise ConnectionError(f"mqtt broker {self.host}:{self.port} refused or timed out: rc={self._connect_rc}")

    def publish(self, topic: str, payload: bytes) -> None:
        """Hand one message to paho; never blocks (the queue is unlimited)."""
        info = self.client.publish(topic, payload, qos=self.qos)
        # NO_CONN with QoS >= 1 means paho kept the message and sends it on reconnect; at QoS 0 it is gone.
        if info.rc == mqtt.MQTT_ERR_SUCCESS or (info.rc == mqtt.MQTT_ERR_NO_CONN and self.qos > 0):
            self.attempted += 1

    def wait_acked(self, timeout_s: float = ACK_TIMEOUT_S) -> int:
        """Wait until every publish is acknowledged (or the timeout); return the acknowledged count."""
        deadline = time.monotonic() + timeout_s
        while self.acked < self.attempted and time.monotonic() < deadline:
            self._quickack()
            time.sleep(0.002)
        acked = self.acked
        if acked < self.attempted:
            log.warning("event=ack_timeout attempted=%d acked=%d timeout_s=%g", self.attempted, acked, timeout_s)
        return acked

    def _quickack(self) -> None:
        # With nothing left to send we would delay our TCP ACKs 40 ms, and the broker's Nagle then holds
        # the last PUBACKs that long; quick-ack mode (Linux, reset by the kernel, so re-armed) avoids it.
        sock = self.client.socket()
        quickack = getattr(socket, "TCP_QUICKACK", None)
        if sock is not None and quickack is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
            except OSError:
                pass

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()
