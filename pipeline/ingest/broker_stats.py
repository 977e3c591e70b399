"""Loss at the broker, made visible: the broker's own counters of messages it dropped.

Mosquitto drops QoS 1 messages for a client whose queue is full (max_queued_messages) and says so only in
`$SYS/broker/publish/messages/dropped`, published (retained) every `sys_interval` seconds when it changed.
A small client of its own (not the bridge's: the bridge's messages go to Kafka) subscribes to the
configured counters; every `report_interval_s` the growth seen since the previous report becomes a reading
`mqtt_dropped` of sensor `broker:<host>`, handed to the sinks like the log counts, so the threshold in
`thresholds.mqtt_dropped` opens an alert when drops grow and resolves it after reports without growth.

The counters last reported are kept in Redis (`broker_stats:<sensor id>`, under redis.key_prefix), so drops while
the daemon itself was down (a restart is when a persistent session's queue overflows) count as growth at the
next start instead of disappearing into a new baseline. A value is kept only once the reading holding its growth
is stored by every durable sink (the injected batch is done): a daemon killed between seeing drops and storing
them counts them again at its next start (at least once, as for consumed readings), instead of the alert never
opening because the baseline already held them.

Mosquitto republishes a counter only when it changed, and its retained copy expires 60 s after that: a daemon
that (re)starts more than a minute after the last drop never receives the counter. So it also watches the
broker's moving average of drops (`recent_rate_topic`, Mosquitto: `$SYS/broker/load/publish/dropped/15min`,
republished every sys_interval while it decays): until a counter value arrives, the drops it accounts for
(rate per minute x window minutes, about the drops of the last window) count as growth, marked estimated.
The first counter value of a run takes over, minus what was estimated; without a previous value to grow
from, its growth is at most that recent estimate (the rest happened too long ago to tell when).

The average also holds the drops an earlier run already counted (a restart within minutes of them): so the
last value of it a run received is kept too (`#rate` in the same hash, with the time it arrived), and a new run
counts only what its first live value (not the retained copy: its age is unknown) holds beyond that one decayed
the way the broker decays it (exp(-elapsed / window)), give or take 1 % and one drop.

The pure part (parsing, growth with counter resets, the estimate) is `DropTracker`; `BrokerStats` is the runner.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from functools import partial
from typing import Callable

from ..agents.publisher import MqttPublisher
from ..agents.system import sanitize_host
from ..config import MqttConfig, Secret
from ..observability.metrics import Metrics
from ..records import Reading
from ..records import BROKER_SENSOR_TYPE  # noqa: F401 - reserved, defined below every layer

log = logging.getLogger(__name__)
SENSOR_TYPE = BROKER_SENSOR_TYPE
METRIC = "mqtt_dropped"
SENSOR_ID_MAX = 50
RATE_FIELD = "#rate"  # no topic name contains '#': never a counter's field
# The broker's average and ours of what an earlier run counted drift apart by its whole-second clock and
# the two-decimal payloads: a difference within this share (plus one drop) is no new drop.
CARRY_TOLERANCE = 0.01


def sensor_id(host: str) -> str:
    """The reserved sensor id the broker's drop readings are stored under."""
    return f"broker:{sanitize_host(host)}"[:SENSOR_ID_MAX]


def parse_number(payload: bytes) -> float | None:
    """A $SYS payload ('12', '31.55') -> its value; None for anything but a finite number >= 0 (never raises)."""
    try:
        value = float(payload.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None
    if value != value or value in (float("inf"), float("-inf")) or value < 0:
        return None
    return value


def parse_counter(payload: bytes) -> int | None:
    """A $SYS counter payload ('12', '12.0') -> its value; None for anything else (never raises)."""
    value = parse_number(payload)
    return None if value is None else int(value)


def growth(previous: int | None, current: int) -> int:
    """How much a counter grew: 0 for its first value (a baseline: when those drops happened is unknown),
    the whole value after a reset (the broker restarted and counts from 0 again)."""
    if previous is None:
        return 0
    return current - previous if current >= previous else current


class DropTracker:
    """The broker's counters per topic, its recent drop rate, and the growth seen since start and since the
    last report."""

    def __init__(self, baseline: dict[str, int] | None = None, rate_window_s: float = 900.0,
                 previous_rate: tuple[float, float] | None = None):
        self.values: dict[str, int] = {}
        self.baseline = dict(baseline or {})  # the previous run's last values: growth starts from them
        self.rate_window_s = rate_window_s
        self.rate_per_min: float | None = None  # the broker's moving average of drops per minute
        # (per minute, when received) of the average: the last an earlier run received (its drops were counted),
        # and the latest published while this run watched (a retained copy's age is unknown).
        self.previous_rate = previous_rate
        self.rate_live: tuple[float, float] | None = None
        self.estimated = 0  # growth counted from the rate while no counter value had arrived in this run
        self.seen_total = 0
        self.pending = 0  # growth not reported yet
        self.last_growth_at: float | None = None
        self.last_value_at: float | None = None

    def recent(self) -> int:
        """About the drops of the last rate window, by the broker's own average (0 when unknown)."""
        return round(self.rate_per_min * self.rate_window_s / 60.0) if self.rate_per_min else 0

    def recent_new(self) -> int | None:
        """The recent drops no earlier run counted; None until a live value of the average tells them apart."""
        if self.previous_rate is None:
            return self.recent()
        if self.rate_live is None:
            return None
        (live, at), (before, before_at) = self.rate_live, self.previous_rate
        per_window = self.rate_window_s / 60.0
        counted = before * math.exp(-max(0.0, at - before_at) / self.rate_window_s) * per_window
        new = live * per_window - counted
        return round(new) if new > CARRY_TOLERANCE * counted + 1 else 0

    def _grew(self, grew: int, now: float) -> None:
        if grew:
            self.seen_total += grew
            self.pending += grew
            self.last_growth_at = now

    def observe(self, topic: str, value: int, now: float) -> int:
        """One published counter value; returns the growth it shows."""
        previous = self.values.get(topic, self.baseline.get(topic))
        if self.values:
            grew = growth(previous, value)
        else:
            # The run's first counter value: what the estimate already counted is not counted twice, and without
            # a previous value only the recent drops are known to be new.
            recent = self.recent_new()
            known = growth(previous, value) if previous is not None else min(value, self.recent() if recent is None
                                                                             else recent)
            grew, self.estimated = max(0, known - self.estimated), 0
        self.values[topic] = value
        self.last_value_at = now
        self._grew(grew, now)
        return grew

    def observe_rate(self, per_min: float, now: float, live: bool = True) -> None:
        """A value of the broker's average; `live`: published now, not a retained copy sent on subscribing."""
        self.rate_per_min = per_min
        self.last_value_at = now
        if live:
            self.rate_live = (per_min, now)

    def estimate(self, now: float) -> int:
        """While no counter value has arrived in this run: the recent drops the rate accounts for, as far as they
        exceed what was already counted, count as growth. Returns that growth (0 once a counter arrived)."""
        if self.values or self.rate_per_min is None:
            return 0
        recent = self.recent_new()
        if recent is None:
            return 0
        more = max(0, recent - self.estimated)
        self.estimated += more
        self._grew(more, now)
        return more

    def take(self) -> int | None:
        """Growth since the previous call, None while nothing has been seen (nothing to report)."""
        if not self.values and self.rate_per_min is None:
            return None
        grew, self.pending = self.pending, 0
        return grew

    def status(self) -> dict:
        counter = bool(self.values)
        return {"dropped": dict(self.values), "dropped_total": sum(self.values.values()) if counter else None,
                "counter_received": counter, "recent_rate_per_min": self.rate_per_min,
                "recent_estimate": self.recent(), "rate_window_s": self.rate_window_s,
                "estimated": not counter and self.seen_total > 0,
                "seen_since_start": self.seen_total, "last_growth_at": self.last_growth_at,
                "last_value_at": self.last_value_at}


class BrokerStats:
    """Subscribes to the broker's drop counters with its own client id (`<client_id>-sys`), clean session,
    QoS 0, and the bridge's host, port, TLS and credentials; reports their growth as readings."""

    def __init__(self, cfg: MqttConfig, password: Secret, metrics: Metrics, inject: Callable[[list[Reading]], object],
                 client_id_suffix: str = "", clock=time.time, memory: "CounterMemory | None" = None):
        self.cfg = cfg
        self.topics = tuple(cfg.broker_stats.topics)
        self.rate_topic = cfg.broker_stats.recent_rate_topic
        self.interval_s = cfg.broker_stats.report_interval_s
        self.metrics = metrics
        self.inject = inject
        self.clock = clock
        self.sensor_id = sensor_id(cfg.host)
        self.memory = memory
        self.tracker = DropTracker(memory.load() if memory is not None else None, cfg.broker_stats.recent_rate_window_s,
                                   memory.load_rate() if memory is not None else None)
        self._lock = threading.Lock()  # the paho thread observes, the report loop takes
        # What the broker said since the last report (topic -> counter; the rate and when): kept in `memory` once the
        # report covering it is stored (`_keep`), not when received. A rate received while every growth seen is
        # kept is kept at once (it stands for drops an earlier run counted, at the next start).
        self._unsaved: dict[str, int] = {}
        self._unsaved_rate: tuple[float, float] | None = None
        self._reporting = False  # a report taken and not yet kept
        # Exported at 0 from the start, so the first drops are an increase (a series born at N shows none to
        # increase() and rate()). A filter with wildcards has no topic yet: its series come with the counters.
        for topic in (*self.topics, self.rate_topic):
            if topic and "+" not in topic and "#" not in topic:
                metrics.broker_drops_seen.labels(topic)
        self.link = MqttPublisher(cfg.host, cfg.port, f"{cfg.client_id}{client_id_suffix}-sys", cfg.username or None,
                                  password.reveal() or None, cfg.keepalive_s, qos=0, tls=cfg.tls)
        self.link.on_connected = self._subscribe
        self.link.client.on_message = self._on_message

    def _subscribe(self, client) -> None:
        # Clean session: subscriptions do not survive a reconnect, so they are made on every connect. The rate
        # comes first: the broker sends retained copies in this order, and a first counter value needs the rate.
        rate = [(self.rate_topic, 0)] if self.rate_topic else []
        client.subscribe(rate + [(t, 0) for t in self.topics])

    def _on_message(self, _client, _userdata, msg) -> None:
        if msg.topic == self.rate_topic:
            rate = parse_number(msg.payload)
            if rate is not None:
                now, live = self.clock(), not msg.retain
                with self._lock:
                    self.tracker.observe_rate(rate, now, live)
                    keep = live or self.tracker.rate_live is None  # a retained copy only until a live value came
                    if keep and (self._unsaved or self._reporting):
                        self._unsaved_rate, keep = (rate, now), False
                if keep and self.memory is not None:
                    self.memory.save_rate(rate, now)
                self.metrics.broker_drop_rate.set(rate)
            return
        value = parse_counter(msg.payload)
        if value is None:
            log.debug("event=broker_stats_unparsed topic=%s", msg.topic)
            return
        with self._lock:
            grew = self.tracker.observe(msg.topic, value, self.clock())
            self._unsaved[msg.topic] = value
        self.metrics.broker_dropped.labels(msg.topic).set(value)
        if grew:
            self.metrics.broker_drops_seen.labels(msg.topic).inc(grew)
            log.warning("event=mqtt_broker_dropped topic=%s dropped=%d total=%d note=see_max_queued_messages",
                        msg.topic, grew, value)

    def report(self) -> tuple[Reading | None, Callable[[], None]]:
        """The reading for the interval just ended (growth, often 0; None while nothing is known), and what keeps
        the counters it covers as the next start's baseline: to call once the reading is stored."""
        with self._lock:
            estimated = self.tracker.estimate(self.clock())
            grew = self.tracker.take()
            counters, rate = self._unsaved, self._unsaved_rate
            self._unsaved, self._unsaved_rate, self._reporting = {}, None, True
        keep = partial(self._keep, counters, rate)
        if estimated:
            self.metrics.broker_drops_seen.labels(self.rate_topic).inc(estimated)
            log.warning("event=mqtt_broker_dropped topic=%s dropped=%d estimated=true note=counter_not_received_"
                        "see_max_queued_messages", self.rate_topic, estimated)
        if grew is None or not self.link.connected.is_set():
            # Nothing to store: the values are the baseline as they are (with no growth reported, none is lost).
            return None, keep
        now = self.clock()
        return Reading(self.sensor_id, SENSOR_TYPE, None, METRIC, float(grew), now, now), keep

    def _keep(self, counters: dict[str, int], rate: tuple[float, float] | None) -> None:
        if self.memory is not None:
            for topic, value in counters.items():
                self.memory.save(topic, value)
            if rate is not None:
                self.memory.save_rate(*rate)
        with self._lock:
            self._reporting = False

    def status(self) -> dict:
        """For the dashboard: the broker's counters and what this daemon saw grow."""
        with self._lock:
            out = self.tracker.status()
        return {"sensor_id": self.sensor_id, "topics": list(self.topics), "rate_topic": self.rate_topic,
                "connected": self.link.connected.is_set(), **out}

    def run(self, stop: threading.Event) -> None:
        """Connect, then report every interval until `stop`; disconnects on the way out."""
        self.link.start()
        try:
            while not stop.wait(self.interval_s):
                reading, keep = self.report()
                if reading is None:
                    keep()
                    continue
                batch = self.inject([reading])
                # Until every durable sink holds the reading (a store refusing writes holds it up; the growth of
                # the intervals meanwhile waits in the tracker for the next report).
                while batch is not None and not batch.done.wait(0.5):
                    if stop.is_set():
                        return  # not kept: the next start counts these drops again
                if batch is not None:
                    keep()
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
            if topic in (RATE_FIELD, RATE_FIELD.encode()):
                continue
            parsed = parse_counter(value if isinstance(value, bytes) else str(value).encode())
            if parsed is not None:
                out[topic.decode() if isinstance(topic, bytes) else topic] = parsed
        return out

    def save(self, topic: str, value: int) -> None:
        try:
            self.client.hset(self.key, topic, value)
        except Exception as err:  # noqa: BLE001
            log.debug("event=broker_stats_baseline_not_saved error=%r", str(err)[:200])

    def load_rate(self) -> tuple[float, float] | None:
        """The broker's average as last received by an earlier run: (per minute, when); None if unknown."""
        try:
            stored = self.client.hget(self.key, RATE_FIELD)
        except Exception as err:  # noqa: BLE001 - Redis away: as if no earlier run had counted anything
            log.warning("event=broker_stats_rate_unavailable error=%r", str(err)[:200])
            return None
        try:
            per_min, at = (float(x) for x in (stored.decode() if isinstance(stored, bytes) else stored).split())
        except (AttributeError, ValueError):
            return None
        return (per_min, at) if per_min >= 0 and math.isfinite(per_min) and math.isfinite(at) else None

    def save_rate(self, per_min: float, at: float) -> None:
        try:
            self.client.hset(self.key, RATE_FIELD, f"{per_min} {at}")
        except Exception as err:  # noqa: BLE001
            log.debug("event=broker_stats_rate_not_saved error=%r", str(err)[:200])
