"""Load generator for the benchmark: MQTT QoS 1 publishes written straight to the socket.

A paho client spends tens of microseconds per publish in Python; at 20,000 msg/s on two cores that
alone would be the bottleneck. Here each publish is a few bytes of packet header around a payload
formatted from a template, sent in bursts; a reader thread counts the PUBACKs. Each payload carries
its publish time (the reading's timestamp, unique per sensor) and a sequence number (`seq`), so the
benchmark measures loss, duplicates and latency from the data itself.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect_packet(client_id: str, keepalive: int = 60) -> bytes:
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02" + struct.pack("!H", keepalive) + struct.pack("!H", len(cid)) + cid
    return b"\x10" + _remaining_length(len(body)) + body


def publish_packet(topic: bytes, packet_id: int, payload: bytes) -> bytes:
    """QoS 1 PUBLISH."""
    body_len = 2 + len(topic) + 2 + len(payload)
    return b"\x32" + _remaining_length(body_len) + struct.pack("!H", len(topic)) + topic + struct.pack("!H", packet_id) + payload


def payload_for(seq: int, now: float, readings: int) -> bytes:
    """The reading(s) of one message, timestamp = publish time (unique per sensor: the reading's identity).

    Values are what healthy sensors send: slow daily-cycle drift plus a few millionths of jitter, never the
    same twice in a row, so the detectors do their full work without raising a storm of alerts (a
    sequence number as the value would cross every threshold and rate limit)."""
    drift = 0.5 * math.sin(now / 600.0) + (seq % 7) * 1e-6
    if readings == 1:
        return b'{"metric":"temperature","value":%.6f,"timestamp":%.6f,"seq":%d}' % (21.0 + drift, now, seq)
    return (b'{"readings":{"temperature":%.6f,"humidity":%.6f,"pressure":%.6f},"timestamp":%.6f,"seq":%d}'
            % (21.0 + drift, 45.0 + drift, 1013.0 + drift, now, seq))


@dataclass
class GenResult:
    published: int
    acked: int
    cpu_s: float
    elapsed_s: float


class _AckReader(threading.Thread):
    """Reads PUBACKs (4 bytes each) and counts them; CONNACK first."""

    def __init__(self, sock: socket.socket):
        super().__init__(daemon=True)
        self.sock, self.acked, self.error = sock, 0, None
        self.connected = threading.Event()

    def run(self) -> None:
        buf = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return
                buf += data
                while len(buf) >= 2:
                    kind, length = buf[0], buf[1]  # CONNACK and PUBACK both have a 1-byte remaining length
                    if len(buf) < 2 + length:
                        break
                    if kind == 0x20:
                        self.connected.set()
                    elif kind == 0x40:
                        self.acked += 1
                    buf = buf[2 + length:]
        except OSError as err:
            self.error = err


def publish_worker(host: str, port: int, topic_prefix: str, sensors: list[str], rate: float, duration: float,
                   readings: int, seq_start: int, seq_step: int, start_at: float, out: "mp.Queue",
                   topic: str = "{root}/{sensor}", payload: Callable[[int, float, int], bytes] = payload_for,
                   numbered: bool = False) -> None:
    """One process: paced QoS 1 publishes over one connection; seq = seq_start + k * seq_step, or (`numbered`) the
    sensor's own message number 0, 1, ... (this process owns its sensors whole and sends to them in turn). `topic`
    (with {root} and {sensor}) and `payload` are a dialect's (dialects.py); native JSON by default."""
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(connect_packet(f"bench-gen-{os.getpid()}"))
    reader = _AckReader(sock)
    reader.start()
    reader.connected.wait(10)
    topics = [topic.format(root=topic_prefix, sensor=s).encode() for s in sensors]
    total = int(rate * duration)
    cpu0 = time.process_time()
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    t0 = time.monotonic()
    sent = 0
    packet_id = 0
    burst = max(1, int(rate / 1000))  # about one burst per millisecond
    while sent < total:
        due = min(total, int((time.monotonic() - t0) * rate) + burst)
        if due <= sent:
            time.sleep(0.0005)
            continue
        if sent - reader.acked > 30000:  # never reuse a packet id the broker has not acknowledged
            time.sleep(0.001)
            continue
        now = time.time()
        chunk = []
        for k in range(due - sent):
            packet_id = packet_id % 65535 + 1
            seq = sent // len(topics) if numbered else seq_start + sent * seq_step
            # A microsecond apart: a reading's identity is (sensor, metric, timestamp), so two messages of a
            # burst must never share a timestamp, even when the burst wraps around the sensor list.
            chunk.append(publish_packet(topics[sent % len(topics)], packet_id, payload(seq, now + k * 1e-6, readings)))
            sent += 1
        sock.sendall(b"".join(chunk))
    deadline = time.monotonic() + 30
    while reader.acked < sent and time.monotonic() < deadline and reader.error is None:
        time.sleep(0.01)
    elapsed = time.monotonic() - t0
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
    out.put(GenResult(sent, reader.acked, time.process_time() - cpu0, elapsed))


def generate(host: str, port: int, topic_prefix: str, sensors: list[str], rate: float, duration: float,
             readings: int = 1, processes: int = 1, seq_base: int = 0, topic: str = "{root}/{sensor}",
             payload: Callable[[int, float, int], bytes] = payload_for, numbered: bool = False) -> GenResult:
    """Run `processes` publishers in parallel, splitting sensors and rate; sum their results."""
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    start_at = time.time() + 0.5
    procs = []
    for i in range(processes):
        mine = sensors[i::processes] or sensors
        p = ctx.Process(target=publish_worker, args=(host, port, topic_prefix, mine, rate / processes, duration, readings,
                                                      seq_base + i, processes, start_at, out, topic, payload,
                                                      numbered),
                        daemon=True)
        p.start()
        procs.append(p)
    results = [out.get(timeout=duration + 120) for _ in procs]
    for p in procs:
        p.join(10)
    return GenResult(sum(r.published for r in results), sum(r.acked for r in results),
                     sum(r.cpu_s for r in results), max(r.elapsed_s for r in results))
