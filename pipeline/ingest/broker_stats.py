"""Loss at the broker, made visible: the broker's own counters of messages it dropped.

Mosquitto drops QoS 1 messages for a client whose queue is full (max_queued_messages) and says so only in
`$SYS/broker/publish/messages/dropped`, published (retained) every `sys_interval` seconds when it changed.
A small client of its own (not the bridge's: the bridge's messages go to Kafka) subscribes to the
configured counters; every `report_interval_s` the growth seen since the previous report becomes a reading
`mqtt_dropped` of sensor `broker:<host>`, handed to the sinks like the log counts, so the threshold in
`thresholds.mqtt_dropped` opens an alert when drops grow and resolves it after reports without growth.

The counters last seen are kept in Redis (`broker_stats:<sensor id>`, under redis.key_prefix), so drops while
the daemon itself was down (a restart is when a persistent session's queue overflows) count as growth at the
next start instead of disappearing into a new baseline.

The pure part (parsing, growth with counter resets) is `DropTracker`; `BrokerStats` is the thin runner.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..agents.publisher import MqttPublisher
from ..agents.system import sanitize_host
from ..config import MqttConfig, Secret
from ..observability.metrics import Metrics
from ..records import Reading
from .mqtt_bridge import configure_tls

log = logging.getLogger(__name__)
SENSOR_TYPE = "broker"
METRIC = "mqtt_dropped"
SENSOR_ID_MAX = 50


def sensor_id(host: str) -> str:
    """The reserved sensor id the broker's drop readings are stored under."""
    return f"broker:{sanitize_host(host)}"[:SENSOR_ID_MAX]


def parse_counter(payload: bytes) -> int | None:
    """A $SYS counter payload ('12', '12.0') -> its value; None for anything else (never raises)."""
    try:
        value = float(payload.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None
    if value != value or value in (float("inf"), float("-inf")) or value < 0:
        return None
    return int(value)


def growth(previous: int | None, current: int) -> int:
    """How much a counter grew: 0 for its first value (a baseline: when those drops happened is unknown),
    the whole value after a reset (the broker restarted and counts from 0 again)."""
    if previous is None:
        return 0
    return current - previous if current >= previous else current


class DropTracker:
    """The broker's counters per topic and the growth seen since start and since the last report."""

    def __init__(self, baseline: dict[str, int] | None = None):
        self.values: dict[str, int] = {}
        self.baseline = dict(baseline or {})  # the previous run's last values: growth starts from them
        self.seen_total = 0
        self.pending = 0  # growth not reported yet
        self.last_growth_at: float | None = None
        self.last_value_at: float | None = None

    def observe(self, topic: str, value: int, now: float) -> int:
        """One published counter value; returns the growth it shows."""
        previous = self.values.get(topic, self.baseline.get(topic))
        grew = growth(previous, value)
        self.values[topic] = value
        self.last_value_at = now
        if grew:
            self.seen_total += grew
            self.pending += grew
            self.last_growth_at = now
        return grew

    def take(self) -> int | None:
        """Growth since the previous call, None while no counter has been seen (nothing to report)."""
        if not self.values:
            return None
        grew, self.pending = self.pending, 0
        return grew

    def status(self) -> dict:
        return {"dropped": dict(self.values), "dropped_total": sum(self.values.values()),
                "seen_since_start": self.seen_total, "last_growth_at": self.last_growth_at,
                "last_value_at": self.last_value_at}


class BrokerStats:
    """Subscribes to the broker's drop counters with its own client id (`<client_id>-sys`), clean session,
    QoS 0, and the bridge's host, port, TLS and credentials; reports their growth as readings."""

    def __init__(self, cfg: MqttConfig, password: Secret, metrics: Metrics, inject: Callable[[list[Reading]], object],
                 client_id_suffix: str = "", clock=time.time, memory: "CounterMemory | None" = None):
        self.cfg = cfg
        self.topics = tuple(cfg.broker_stats.topics)
        self.interval_s = cfg.broker_stats.report_interval_s
        self.metrics = metrics
        self.inject = inject
        self.clock = clock
        self.sensor_id = sensor_id(cfg.host)
        self.memory = memory
        self.tracker = DropTracker(memory.load() if memory is not None else None)
        self._lock = threading.Lock()  # the paho thread observes, the report loop takes
        self.link = MqttPublisher(cfg.host, cfg.port, f"{cfg.client_id}{client_id_suffix}-sys", cfg.username or None,
                                  password.reveal() or None, cfg.keepalive_s, qos=0)
        if cfg.tls.enabled:
            configure_tls(self.link.client, cfg.tls)
        self.link.on_connected = self._subscribe
        self.link.client.on_message = self._on_message

    def _subscribe(self, client) -> None:
        # Clean session: subscriptions do not survive a reconnect, so they are made on every connect.
        client.subscribe([(t, 0) for t in self.topics])

    def _on_message(self, _client, _userdata, msg) -> None:
        value = parse_counter(msg.payload)
        if value is None:
            log.debug("event=broker_stats_unparsed topic=%s", msg.topic)
            return
        with self._lock:
            grew = self.tracker.observe(msg.topic, value, self.clock())
        self.metrics.broker_dropped.labels(msg.topic).set(value)
        if self.memory is not None:
            self.memory.save(msg.topic, value)
        if grew:
            self.metrics.broker_drops_seen.labels(msg.topic).inc(grew)
            log.warning("event=mqtt_broker_dropped topic=%s dropped=%d total=%d note=see_max_queued_messages",
                        msg.topic, grew, value)

    def report(self) -> Reading | None:
        """The reading for the interval just ended (growth, often 0), None while nothing is known."""
        with self._lock:
            grew = self.tracker.take()
        if grew is None or not self.link.connected.is_set():
            return None
        now = self.clock()
        return Reading(self.sensor_id, SENSOR_TYPE, None, METRIC, float(grew), now, now)

    def status(self) -> dict:
        """For the dashboard: the broker's counters and what this daemon saw grow."""
        with self._lock:
            out = self.tracker.status()
        return {"sensor_id": self.sensor_id, "topics": list(self.topics), "connected": self.link.connected.is_set(), **out}

    def run(self, stop: threading.Event) -> None:
        """Connect, then report every interval until `stop`; disconnects on the way out."""
        self.link.start()
        try:
            while not stop.wait(self.interval_s):
                reading = self.report()
                if reading is not None:
                    self.inject([reading])
        finally:
            self.link.client.disconnect()
            self.link.client.loop_stop()


class CounterMemory:
    """The broker's counters as last seen, in a Redis hash (topic -> value); best effort: Redis away means only
    that drops during a later restart of the daemon go unnoticed, never that ingest waits."""

    def __init__(self, client, key: str):
        self.client, self.key = client, key

    def load(self) -> dict[str, int]:
        try:
            stored = self.client.hgetall(self.key)
        except Exception as err:  # noqa: BLE001 - any Redis failure: start without a baseline
            log.warning("event=broker_stats_baseline_unavailable error=%r", str(err)[:200])
            return {}
        out = {}
        for topic, value in stored.items():
            parsed = parse_counter(value if isinstance(value, bytes) else str(value).encode())
            if parsed is not None:
                out[topic.decode() if isinstance(topic, bytes) else topic] = parsed
        return out

    def save(self, topic: str, value: int) -> None:
        try:
            self.client.hset(self.key, topic, value)
        except Exception as err:  # noqa: BLE001
            log.debug("event=broker_stats_baseline_not_saved error=%r", str(err)[:200])
