"""System metrics agent: CPU, load, memory, swap, disk and network rates of this host, published over MQTT
in the sensors' reading format (type "system") to <topic root>/<host>, every interval.

    python -m pipeline.agents.system [--interval 5] [--host NAME] [--mqtt-host localhost] [--mqtt-port 1883]
                                     [--mqtt-username USER] [--topic-root system] [--disk-path /] [--count N]
                                     [--spool PATH] [--spool-max-bytes 10485760]
                                     [--tls [--ca-file PEM] [--cert-file PEM --key-file PEM] [--insecure]]

Every sample is written to a spool on disk first (pipeline/agents/spool.py; default <state dir>/system-agent.db,
the state dir being systemd's $STATE_DIRECTORY) and leaves it when the broker acknowledged it, so samples taken
while the broker is away survive a restart or a crash of the agent and are sent in order when it returns.

The MQTT password comes from the environment (MQTT_PASSWORD). The TLS options mean what mqtt.tls.* mean for
the daemon. The daemon runs the same agent as a thread when `agents.system.enabled` is set (with the bridge's
mqtt.host, port, username and mqtt.tls). Metric names are listed in METRICS (docs/sources.md).
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import socket
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

import orjson
import psutil

from ..config import TlsConfig
from .publisher import MqttPublisher
from .spool import DEFAULT_MAX_BYTES, MIN_MAX_BYTES, SpooledPublisher, SpoolBusy, open_spooled, spool_path

log = logging.getLogger(__name__)

METRICS = ("cpu_percent", "load1", "load5", "load15", "mem_percent", "swap_percent", "disk_percent",
           "net_rx_bytes_s", "net_tx_bytes_s", "net_rx_packets_s", "net_tx_packets_s")
NET_RATES = (("net_rx_bytes_s", 0), ("net_tx_bytes_s", 1), ("net_rx_packets_s", 2), ("net_tx_packets_s", 3))
SENSOR_TYPE = "system"
HOST_MAX = 50
_HOST_BAD = re.compile(r"[^A-Za-z0-9_.:\-]")


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of the host's counters and gauges; None where the host could not tell."""

    at: float  # monotonic seconds, for rates
    cpu_total: float  # CPU seconds, all states
    cpu_busy: float  # CPU seconds, not idle or waiting for I/O
    load: tuple[float, float, float] | None
    mem_percent: float | None
    swap_percent: float | None
    disk_percent: float | None
    net: tuple[int, int, int, int] | None  # bytes received, bytes sent, packets received, packets sent


def cpu_split(times) -> tuple[float, float]:
    """(total, busy) CPU seconds the way psutil.cpu_percent counts them: guest time is already in user/nice,
    idle and iowait are not busy."""
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    busy = total - times.idle - getattr(times, "iowait", 0.0)
    return total, busy


def take_sample(disk_path: str = "/", clock: Callable[[], float] = time.monotonic) -> Sample:
    """Read the host now (psutil). Net counters sum every interface except loopback."""
    total, busy = cpu_split(psutil.cpu_times())
    try:
        disk = psutil.disk_usage(disk_path).percent
    except OSError:
        disk = None
    try:
        load = tuple(psutil.getloadavg())
    except (OSError, AttributeError):
        load = None
    nics = psutil.net_io_counters(pernic=True)
    rx = tx = prx = ptx = 0
    for name, c in nics.items():
        if not name.startswith("lo"):
            rx, tx, prx, ptx = rx + c.bytes_recv, tx + c.bytes_sent, prx + c.packets_recv, ptx + c.packets_sent
    return Sample(clock(), total, busy, load, psutil.virtual_memory().percent, psutil.swap_memory().percent, disk,
                  (rx, tx, prx, ptx) if nics else None)


def readings(prev: Sample, cur: Sample) -> dict[str, float]:
    """The metrics for the interval between two samples: rates and CPU from the differences, gauges from `cur`.
    A counter that went backwards (an interface reset) gives no rate for that interval."""
    out: dict[str, float] = {}
    d_total = cur.cpu_total - prev.cpu_total
    if d_total > 0:
        out["cpu_percent"] = round(min(100.0, max(0.0, 100.0 * (cur.cpu_busy - prev.cpu_busy) / d_total)), 2)
    if cur.load is not None:
        out["load1"], out["load5"], out["load15"] = (round(v, 3) for v in cur.load)
    for name in ("mem_percent", "swap_percent", "disk_percent"):
        value = getattr(cur, name)
        if value is not None:
            out[name] = float(value)
    dt = cur.at - prev.at
    if dt > 0 and cur.net is not None and prev.net is not None:
        for name, i in NET_RATES:
            delta = cur.net[i] - prev.net[i]
            if delta >= 0:
                out[name] = round(delta / dt, 3)
    return out


def sanitize_host(name: str) -> str:
    """A host name usable as a sensor id (^[A-Za-z0-9][A-Za-z0-9_.:-]*$, at most 50 characters)."""
    cleaned = _HOST_BAD.sub("-", name).lstrip("_.:-")[:HOST_MAX]
    return cleaned or "host"


def message(host: str, ts: float, values: dict[str, float]) -> bytes:
    """The JSON reading message, as any device sends it."""
    return orjson.dumps({"type": SENSOR_TYPE, "location": host, "timestamp": round(ts, 3), "readings": values})


class SystemAgent:
    """Samples every `interval_s` and publishes the interval's metrics; the first sample only primes the rates."""

    def __init__(self, publisher: MqttPublisher | SpooledPublisher, host: str = "", topic_root: str = "system", interval_s: float = 5.0,
                 disk_path: str = "/", on_publish: Callable[[bool], None] | None = None):
        self.publisher = publisher
        self.host = sanitize_host(host or socket.gethostname())
        self.topic = f"{topic_root}/{self.host}"
        self.interval_s = interval_s
        self.disk_path = disk_path
        self.on_publish = on_publish
        self.published = 0
        self.dropped = 0

    def run(self, stop: threading.Event, count: int | None = None) -> None:
        """Publish until `stop` is set (or `count` messages were handed over)."""
        log.info("event=system_agent_started topic=%s interval_s=%g", self.topic, self.interval_s)
        prev = take_sample(self.disk_path)
        next_at = prev.at + self.interval_s
        while count is None or self.published < count:
            if stop.wait(max(0.0, next_at - time.monotonic())):
                return
            cur = take_sample(self.disk_path)
            # Keep the cadence, but after a long stall (suspend) start afresh instead of catching up.
            next_at = next_at + self.interval_s if cur.at - next_at < self.interval_s else cur.at + self.interval_s
            values = readings(prev, cur)
            prev = cur
            if not values:
                continue
            ts = time.time()
            ok = self.publisher.publish(self.topic, message(self.host, ts, values))
            if ok:
                self.published += 1
                log.debug("event=system_sample_spooled ts=%.3f", ts)
            else:
                self.dropped += 1
            if self.on_publish is not None:
                self.on_publish(ok)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipeline.agents.system", description=__doc__.splitlines()[0])
    p.add_argument("--interval", type=float, default=5.0, help="seconds between samples (default 5)")
    p.add_argument("--host", default="", help="host name to report (default: this machine's, sanitized)")
    p.add_argument("--mqtt-host", default="localhost")
    p.add_argument("--mqtt-port", type=int, default=None, help="default 1883, with --tls 8883")
    p.add_argument("--mqtt-username", default="", help="password from MQTT_PASSWORD")
    p.add_argument("--topic-root", default="system", help="publishes to <root>/<host> (default system)")
    p.add_argument("--disk-path", default="/", help="file system whose usage is disk_percent (default /)")
    p.add_argument("--count", type=int, default=None, help="stop after N messages (default: run until stopped)")
    p.add_argument("--spool", default="", help="the spool file that keeps samples until the broker acknowledged "
                                               "them (default: <state dir>/system-agent.db)")
    p.add_argument("--spool-max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                   help="bound of the spool file; beyond it the oldest samples are dropped and counted (default 10 MiB)")
    tls = p.add_argument_group("TLS (as mqtt.tls.* of the daemon)")
    tls.add_argument("--tls", action="store_true", help="connect over TLS, the broker's certificate verified")
    tls.add_argument("--ca-file", default="", help="CA certificate(s) to verify the broker with (default: the system's)")
    tls.add_argument("--cert-file", default="", help="client certificate, for brokers that authenticate by certificate")
    tls.add_argument("--key-file", default="", help="the client certificate's private key")
    tls.add_argument("--insecure", action="store_true", help="skip certificate and host name checks (test benches only)")
    args = p.parse_args(argv)
    given = [flag for flag, value in (("--ca-file", args.ca_file), ("--cert-file", args.cert_file),
                                      ("--key-file", args.key_file), ("--insecure", args.insecure)) if value]
    if given and not args.tls:  # silently connecting in clear would send the password in clear
        p.error(f"{given[0]}: needs --tls")
    if args.mqtt_port is None:
        args.mqtt_port = 8883 if args.tls else 1883
    if args.spool_max_bytes < MIN_MAX_BYTES:
        p.error(f"--spool-max-bytes: at least {MIN_MAX_BYTES}")
    if args.interval < 0.1:
        p.error("--interval: must be at least 0.1 seconds")
    if "/" in args.topic_root or "+" in args.topic_root or "#" in args.topic_root or not args.topic_root:
        p.error("--topic-root: one topic level, without / + #")
    return args


def tls_settings(args: argparse.Namespace) -> TlsConfig:
    """The TLS options as the daemon's mqtt.tls section."""
    return TlsConfig(enabled=args.tls, ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file,
                     insecure=args.insecure)


def main(argv: list[str] | None = None) -> int:
    from ..observability import kvlog

    args = parse_args(argv)
    kvlog.setup(os.environ.get("LOG_LEVEL", "INFO"))
    try:
        publisher = MqttPublisher(args.mqtt_host, args.mqtt_port, username=args.mqtt_username or None,
                                  password=os.environ.get("MQTT_PASSWORD") or None, tls=tls_settings(args))
    except OSError as err:  # a TLS file missing or unreadable (ssl.SSLError is an OSError)
        print(f"tls: cannot use the certificate files: {err}", file=sys.stderr)
        return 2
    path = spool_path(args.spool, "system-agent.db")
    try:
        shipper = open_spooled(publisher, path, args.spool_max_bytes, "system-agent")
    except (SpoolBusy, OSError, sqlite3.DatabaseError) as err:
        print(f"spool: cannot use {path}: {err}", file=sys.stderr)
        return 2
    agent = SystemAgent(shipper, args.host, args.topic_root, args.interval, args.disk_path)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    backlog = shipper.pending
    if backlog:
        log.info("event=spool_replay source=system-agent queued=%d spool=%s", backlog, path)
    shipper.start()
    try:
        agent.run(stop, args.count)
    finally:
        dropped = agent.dropped + shipper.dropped
        left = shipper.close(timeout=5.0)
    # What stays unacknowledged is kept in the spool and sent after the next start.
    log.info("event=system_agent_stopped published=%d dropped=%d unacknowledged=%d spool=%s", agent.published, dropped,
             left, path)
    return 0 if left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
