"""paho-mqtt's Client, with incoming QoS 0/1 PUBLISH packets parsed straight out of a large read buffer.

paho reads each packet with several small recv() calls, builds a dict of read state, an MQTTMessage and
its properties, formats a debug line and handles one packet per select() wake-up: at ten thousand
messages a second that was the ingest thread's main cost (about 13 µs a message in py-spy). Here the
socket is read 256 KiB at a time, and every complete QoS 0/1 PUBLISH in the buffer goes to
`on_publish_raw(topic, payload, qos, mid, dup, retain)` after a few slice operations. Anything else (CONNACK, SUBACK,
PINGRESP, QoS 2, a packet not complete yet) is left to paho's own reader, which reads the same buffer
through `_sock_recv`: connection handling, TLS, keepalive and reconnects stay paho's.

This is the one module that touches paho's private names (docs STYLE point 12), written against
paho-mqtt==2.2.0 (requirements.txt pins it exactly; tests/unit/ingest/test_mqtt_fastpath_contract.py fails on
any other version, and checks each name below). `mqtt.fast_path: false` makes the bridge use paho's plain
`on_message` and `ack()` instead. The private names relied on, all of `paho.mqtt.client`:
  Client._sock_recv(bufsize)      overridden and called: paho's reader reads every byte through it
  Client._packet_read()           paho's reader for one packet (what the fast path leaves to it)
  Client._loop_rc_handle(rc)      paho's handling of a read error (disconnect, on_disconnect)
  Client._packet_queue(command, packet, mid, qos)   queues bytes to send and wakes the network thread
  Client._handle_on_message(message)   overridden: paho calls it for every PUBLISH its reader parsed
  Client._sock                    the connected socket (None when not connected)
  Client._in_packet               paho's partial packet state; ["command"] is 0 between packets
  Client._protocol                MQTTv311 or MQTTv5
  Client._in_callback_mutex       held around user callbacks
  Client._msgtime_mutex, Client._last_bytes_received   keepalive bookkeeping
  Client._userdata                passed to on_message
  MQTTMessage._topic              the topic as received (bytes; `.topic` decodes it)
and that Client has no attribute of the names this subclass adds (_rbuf, _rpos, _rsock, _own_buffer, _fill,
_read_publishes, on_publish_raw, ack_many, PAHO, WAIT, read_linger_s, _last_read_n, _grow, _grow_need,
max_packet_bytes, on_too_large_raw, _skip, _too_large, _refuse_too_large, _lingered).

A PUBLISH larger than `max_packet_bytes` (whole packet, as MQTT 5's Maximum Packet Size counts it) is never
held whole: its topic and packet id are read, `on_too_large_raw(topic, payload size, qos, mid, dup, retain)` is
called, and the rest of its bytes are discarded as they arrive. This bounds the memory one message can take with
either protocol, and unlike a broker told the limit (MQTT 5's Maximum Packet Size) it leaves a dead letter.

Maintained alternatives checked from their documentation (2026-12-01), not benchmarked: aiomqtt wraps paho's
Client (the same per-packet reader, plus an asyncio hand-off per message); gmqtt is an asyncio client with its
own Python packet handling and one `on_message(client, topic, payload, qos, properties)` call per message.
Neither reads a buffer of PUBLISH packets in one pass, and both need an event loop the bridge does not have;
the plain paho path (`mqtt.fast_path: false`) is the measured baseline (bench/RESULTS.md).
"""
from __future__ import annotations

import struct
import time
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

WRITTEN_FOR = "2.2.0"  # the paho-mqtt version this module was checked against
# The private names of paho's Client this module uses (the contract test checks each one exists as expected).
PAHO_CLIENT_PRIVATE = ("_sock_recv", "_packet_read", "_loop_rc_handle", "_packet_queue", "_handle_on_message",
                       "_sock", "_in_packet", "_protocol", "_in_callback_mutex", "_msgtime_mutex",
                       "_last_bytes_received", "_userdata")
PAHO_MESSAGE_PRIVATE = ("_topic",)

_PUBACK = struct.Struct("!BBH")

READ_CHUNK = 256 * 1024
# Publishes per wake-up under which the next read lingers (mqtt.read_linger_ms): 4 is a low rate (about one
# message per millisecond or less). At 32, 6,900 msg/s lingered on every other wake-up: +8 ms at p50.
LINGER_BELOW = 4
# Once lingering, a lingered read that brought fewer than this keeps the next one lingering: without it, every
# lingered read (about 15 messages at 1,000 msg/s) was followed by an unlingered one that found a message or two,
# two wake-ups (and two PUBACK writes) per linger instead of one. 32 in a 15 ms linger is about 2,100 msg/s; above
# that one lingered read ends it, as before.
KEEP_LINGERING_BELOW = 32
GROW_ABOVE = 2 * READ_CHUNK  # a publish larger than this is gathered in a bytearray (see BufferedClient._fill)
WRITE_EVERY = 256  # packets between flushes of queued PUBACKs while a burst is being read


def linger_next(lingered: bool, last_read: int) -> bool:
    """Whether the next read waits mqtt.read_linger_ms first, after a read (lingered or not) of `last_read` publishes."""
    return last_read < LINGER_BELOW or (lingered and last_read < KEEP_LINGERING_BELOW)


RawHandler = Callable[[bytes, bytes, int, int, bool, bool], None]  # (topic, payload, qos, mid, dup, retain)
TooLargeHandler = Callable[[bytes, int, int, int, bool, bool], None]  # (topic, payload size, qos, mid, dup, retain)


def varint(buf: bytes, i: int, limit: int) -> tuple[int, int] | bool | None:
    """MQTT's variable byte integer at `i` (1 to 4 bytes, 7 bits each): (value, position after it);
    None if it runs past `limit`; False if longer than four bytes (malformed)."""
    value, shift = 0, 0
    while True:
        if i >= limit:
            return None
        if shift > 21:
            return False
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            return value, i
        shift += 7


def publish_header(buf: bytes, pos: int) -> tuple[int, int, int] | bool | None:
    """The fixed header of the QoS 0/1 PUBLISH starting at `pos`: (command byte, start of the variable header,
    end of the packet); None if the header is not all in `buf` yet; False if it is not one for this path
    (another packet type, QoS 2) or malformed."""
    n = len(buf)
    if pos >= n:
        return None
    cmd = buf[pos]
    if cmd & 0xF0 != 0x30 or (cmd >> 1) & 3 >= 2:
        return False
    found = varint(buf, pos + 1, n)
    if found is None or found is False:
        return found
    length, i = found
    return cmd, i, i + length


def split_publish(buf: bytes, pos: int, v5: bool) -> tuple[int, bytes, bytes, int, int, bool, bool] | bool | None:
    """The QoS 0/1 PUBLISH packet starting at `pos`: (end position, topic, payload, qos, mid, dup, retain) if it is all in
    `buf`; None if more bytes are needed; False if it is not one for this path (another packet type, QoS 2,
    an MQTT 5 topic alias, or malformed: paho's reader handles and reports those)."""
    header = publish_header(buf, pos)
    if not header:
        return header
    cmd, i, end = header
    if end > len(buf):
        return None
    if end - i < 2:
        return False
    qos = (cmd >> 1) & 3
    topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1])
    if topic_end == i + 2 or topic_end > end:
        return False
    mid = 0
    j = topic_end
    if qos:
        if j + 2 > end:
            return False
        mid = (buf[j] << 8) | buf[j + 1]
        j += 2
    if v5:  # properties: skipped (we ask for no topic aliases, and use none of the others)
        found = varint(buf, j, end)
        if not found:
            return False
        j = found[1] + found[0]
        if j > end:
            return False
    # DUP: the broker sent this packet before (a resend after a reconnect, with the same packet id).
    # RETAIN: the broker's stored copy, sent because we subscribed, not a message published now.
    return end, buf[i + 2:topic_end], buf[j:end], qos, mid, bool(cmd & 0x08), bool(cmd & 0x01)


def publish_head(buf: bytes, pos: int, v5: bool) -> tuple[int, bytes, int, int, bool, bool, int] | bool | None:
    """The QoS 0/1 PUBLISH starting at `pos`, read up to its payload only: (packet size, topic, qos, mid, dup,
    retain, payload size); None if its variable header is not all in `buf` yet; False if it is not one for this
    path or malformed (as split_publish)."""
    header = publish_header(buf, pos)
    if not header:
        return header
    cmd, i, end = header
    n = len(buf)
    if i + 2 > n:
        return None
    qos = (cmd >> 1) & 3
    topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1])
    j = topic_end + (2 if qos else 0)
    if topic_end == i + 2 or j > end:
        return False
    if j > n:
        return None
    mid = (buf[topic_end] << 8) | buf[topic_end + 1] if qos else 0
    if v5:
        found = varint(buf, j, min(n, end))
        if not found:
            return None if found is None and n < end else False
        j = found[1] + found[0]
        if j > end:
            return False
    return end - pos, buf[i + 2:topic_end], qos, mid, bool(cmd & 0x08), bool(cmd & 0x01), end - j


class BufferedClient(mqtt.Client):
    """A paho Client whose reads are buffered, and whose QoS 0/1 publishes skip paho's per-packet path."""

    def __init__(self, *args, read_linger_s: float = 0.0, max_packet_bytes: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self._rsock = None
        self.on_publish_raw: RawHandler | None = None
        # After a wake-up that found only a few messages, let more arrive before reading: at low rates each
        # wake-up (select, read, parse, produce, and the PUBACK write that follows) costs more than its message.
        self.read_linger_s = read_linger_s
        self._last_read_n = 0
        self._lingered = False  # the last read waited read_linger_s first
        # A PUBLISH larger than GROW_ABOVE is gathered here until complete, then made bytes once: appending
        # each read to the unread rest copied the whole rest every time (16 MiB: 0.47 s, quadratic beyond).
        self._grow: bytearray | None = None
        self._grow_need = 0
        # Larger PUBLISH packets go to on_too_large_raw (both set, or no limit) and their bytes are discarded:
        # _skip is how many of them are still to come.
        self.max_packet_bytes = max_packet_bytes
        self.on_too_large_raw: TooLargeHandler | None = None
        self._skip = 0

    def _own_buffer(self) -> None:
        if self._sock is not self._rsock:  # a new connection: nothing buffered belongs to it
            self._rbuf, self._rpos, self._rsock = b"", 0, self._sock
            self._grow = None
            self._skip = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        self._own_buffer()
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(READ_CHUNK)  # BlockingIOError when nothing is there: paho expects that
            if not data:
                return data
            self._rbuf, self._rpos = data, 0
        start = self._rpos
        self._rpos = start + bufsize
        return self._rbuf[start:self._rpos]

    # What the fast path found at the head of the buffer when it stopped.
    PAHO, WAIT = "paho", "wait"  # another kind of packet (or the socket closed): paho's turn; nothing to do yet

    def _fill(self) -> bool | None:
        """Append what the socket has to the unread rest of the buffer. True: more data; False: nothing now;
        None: the peer closed or the socket failed (paho's reader finds that out and handles it)."""
        try:
            data = super()._sock_recv(READ_CHUNK)
        except BlockingIOError:
            return False
        except (OSError, ConnectionError):
            return None
        if not data:
            return None
        if self._skip:  # the rest of a packet too large to keep
            if len(data) <= self._skip:
                self._skip -= len(data)
                return True
            data, self._skip = data[self._skip:], 0
        if self._grow is not None:  # a large packet being gathered: amortised linear appends
            self._grow += data
            if len(self._grow) >= self._grow_need:
                self._rbuf, self._rpos, self._grow = bytes(self._grow), 0, None
            return True
        rest = self._rbuf[self._rpos:]
        buf = rest + data if rest else data
        header = publish_header(buf, 0)
        need = header[2] if header else 0
        if need > GROW_ABOVE and need > len(buf) and not self._too_large(need):
            self._grow, self._grow_need = bytearray(buf), need
            buf = b""  # nothing to parse until the packet is complete
        self._rbuf, self._rpos = buf, 0
        return True

    def _too_large(self, packet_size: int) -> bool:
        return 0 < self.max_packet_bytes < packet_size and self.on_too_large_raw is not None

    def _refuse_too_large(self, buf: bytes, pos: int, v5: bool) -> bool:
        """If the incomplete PUBLISH at `pos` is over the limit and its head is here: report it, skip its bytes."""
        head = publish_head(buf, pos, v5)
        if not head or not self._too_large(head[0]):
            return False
        size, topic, qos, mid, dup, retain, payload_size = head
        end = pos + size
        if end <= len(buf):
            self._rpos = end
        else:
            self._skip = end - len(buf)
            self._rbuf, self._rpos = b"", 0
        with self._in_callback_mutex:
            self.on_too_large_raw(topic, payload_size, qos, mid, dup, retain)
        return True

    def _read_publishes(self) -> tuple[int, str]:
        """Hand every complete QoS 0/1 PUBLISH to on_publish_raw, reading the socket as needed.
        Returns (how many, PAHO or WAIT)."""
        self._own_buffer()
        handler = self.on_publish_raw
        if handler is None or self._in_packet["command"] != 0:  # paho is in the middle of a packet
            return 0, self.PAHO
        v5 = self._protocol == mqtt.MQTTv5
        limit = self.max_packet_bytes if self.on_too_large_raw is not None else 0
        handled = 0
        while True:
            buf, pos = self._rbuf, self._rpos
            found = split_publish(buf, pos, v5)
            if found is False:
                return handled, self.PAHO
            if found is None:
                if self._refuse_too_large(buf, pos, v5):
                    handled += 1
                    continue
                more = self._fill()
                if more is None:
                    return handled, self.PAHO
                if not more:  # an incomplete publish (or nothing): the rest comes with the next wake-up
                    return handled, self.WAIT
                continue
            end, topic, payload, qos, mid, dup, retain = found
            self._rpos = end
            with self._in_callback_mutex:
                if limit and end - pos > limit:  # complete in one read, yet over the limit
                    self.on_too_large_raw(topic, len(payload), qos, mid, dup, retain)
                else:
                    handler(topic, payload, qos, mid, dup, retain)
            handled += 1
            if handled % WRITE_EVERY == 0 and self.want_write():
                self.loop_write()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        if self._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        self._lingered = bool(self.read_linger_s) and linger_next(self._lingered, self._last_read_n)
        if self._lingered:
            time.sleep(self.read_linger_s)
        self._last_read_n = 0
        handled = 0
        while True:  # until the socket and the buffer are both empty (paho stops after one packet)
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            fast, state = self._read_publishes()
            if fast:
                handled += fast
                self._last_read_n += fast
                with self._msgtime_mutex:
                    self._last_bytes_received = time.monotonic()
            if state == self.WAIT:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            handled += 1
            if handled % WRITE_EVERY == 0 and self.want_write():
                self.loop_write()

    def _handle_on_message(self, message) -> None:
        # Publishes paho's reader still handles (QoS 2, topic aliases): the same handler as the fast path.
        # We register no per-topic callbacks, so paho's topic matcher is skipped too.
        with self._in_callback_mutex:
            if self.on_publish_raw is not None:
                self.on_publish_raw(message._topic, message.payload, message.qos, message.mid, bool(message.dup),
                                    bool(message.retain))
            else:
                self.on_message(self, self._userdata, message)

    def ack_many(self, mids: list[int]) -> None:
        """PUBACK many QoS 1 messages as one queued write: paho's ack() queues, and wakes its network
        thread through a socket, once per message."""
        if mids:
            self._packet_queue(mqtt.PUBACK, b"".join([_PUBACK.pack(0x40, 2, mid) for mid in mids]), 0, 0)
