"""paho-mqtt's Client, reading the socket in large chunks.

paho reads each packet with several small recv() calls and handles one packet per select() wake-up:
at thousands of messages per second that loop, not our code, was most of the ingest thread's time.
Here recv() is served from a 256 KiB buffer, and one wake-up handles every complete packet that
arrived, sending the queued acknowledgements as it goes. Everything else is paho's.
"""
from __future__ import annotations

import struct

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

_PUBACK = struct.Struct("!BBH")

READ_CHUNK = 256 * 1024
WRITE_EVERY = 256  # packets between flushes of queued PUBACKs while a burst is being read


class BufferedClient(mqtt.Client):
    """A paho Client whose reads are buffered and drained per wake-up."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self._rsock = None

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._sock is not self._rsock:  # a new connection: nothing buffered belongs to it
            self._rbuf, self._rpos, self._rsock = b"", 0, self._sock
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(READ_CHUNK)  # BlockingIOError when nothing is there: paho expects that
            if not data:
                return data
            self._rbuf, self._rpos = data, 0
        start = self._rpos
        self._rpos = start + bufsize
        return self._rbuf[start:self._rpos]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        if self._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        handled = 0
        while True:  # until the socket and the buffer are both empty (paho stops after one packet)
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            handled += 1
            if handled % WRITE_EVERY == 0 and self.want_write():
                self.loop_write()

    def _handle_on_message(self, message) -> None:
        # We register no per-topic callbacks: skip paho's topic matcher and call on_message directly.
        with self._in_callback_mutex:
            self.on_message(self, self._userdata, message)

    def ack_many(self, mids: list[int]) -> None:
        """PUBACK many QoS 1 messages as one queued write: paho's ack() queues, and wakes its network
        thread through a socket, once per message."""
        if mids:
            self._packet_queue(mqtt.PUBACK, b"".join([_PUBACK.pack(0x40, 2, mid) for mid in mids]), 0, 0)
