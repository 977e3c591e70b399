"""Hostile load on a real daemon process: thousands of new sensors with hundreds of random metric names each,
beyond limits.max_sensors and limits.max_metrics_per_sensor, while one known canary sensor reports every second.
The daemon's memory stays bounded, every canary reading is stored within a bounded delay, and every refused
reading is dead-lettered with its reason (counted exactly against what was sent beyond the limits)."""
from __future__ import annotations

import json
import statistics
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import psutil
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.integration.clients import DaemonProcess, read_topic, wait_for
from tests.integration.services import mosquitto

HOSTILE_SENSORS = 2000
METRICS_EACH = 200              # distinct random names per hostile sensor
PER_MESSAGE = 100               # readings per message (validation.max_readings_per_message)
MAX_SENSORS = 300               # limits.max_sensors: the canary and 299 hostile sensors get in
MAX_METRICS = 20                # limits.max_metrics_per_sensor
FLOOD_S = 30.0                  # the hostile messages are spread over this long
CANARY_READINGS = 40            # one a second, from before the flood until after it
MAX_CANARY_DELAY_S = 10.0
# Memory. What the refusals leave behind is bounded by the limits: 300 sensors x 20 metric names (about 100 KB)
# and their windows (6,000 aggregates, a few MB). Measured in eight runs: RSS rises once, by 54-61 MiB, within the
# first 5-10 s of the flood, then stays flat (the series printed) while the rest of the hostile sensors arrive.
# The rise is the same with 1,000 or 2,000 hostile sensors, with processing.batch_size 100 or 1,000, with
# librdkafka's consumer prefetch cut to 4 MiB (kafka.client queued.max.messages.kbytes) and with one malloc
# arena (MALLOC_ARENA_MAX=1), so it is neither state per refused series, nor the batch size, nor prefetch,
# nor per-thread arenas. tracemalloc in an in-process run put the pipeline's Python objects at roughly 20 MB
# above idle at their peak (refused messages and dead letters in flight; an estimate: that figure had the test's
# own objects taken out); the rest is not attributed (librdkafka's buffers, memory the allocator keeps). So:
#  - overall growth below 96 MiB (the rise measured, with room for a slower or busier machine), and
#  - after the first 10 s of the flood, less than 16 MiB more while the last two thirds of the hostile sensors
#    (1,333 more, 266,000 sensor/metric pairs) arrive: what proves the memory does not grow with them. "10 s" as
#    the daemon processed them (when the canary reading published then is stored), not by the test's clock.
# Without the limits (max_sensors 100,000, max_metrics_per_sensor 1,000; measured once): RSS 61 -> 280 MiB in
# the first 10 s and 650 MiB at the end, still rising, and 5 s after the flood the canary had 19 of its 40
# readings stored: every pair became a stored row and a window.
MAX_RSS_GROWTH = 96 * 1024 * 1024
MAX_RSS_GROWTH_AFTER_10S = 16 * 1024 * 1024


def metric_name(k: int) -> str:
    """A random name, distinct from any other sensor's: every hostile sensor brings new ones."""
    return f"m{uuid.uuid4().hex[:12]}_{k}"


class Flood(threading.Thread):
    """Publishes, QoS 1, round by round: every hostile sensor's first message, then every second one..."""

    def __init__(self, root: str, port: int):
        super().__init__(daemon=True)
        self.root = root
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"flood-{uuid.uuid4().hex[:8]}")
        self.client.max_inflight_messages_set(1000)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.names = [[metric_name(k) for k in range(METRICS_EACH)] for s in range(HOSTILE_SENSORS)]
        self.infos = []

    def run(self) -> None:
        rounds = METRICS_EACH // PER_MESSAGE
        total = HOSTILE_SENSORS * rounds
        start = time.monotonic()
        n = 0
        for r in range(rounds):
            for s in range(HOSTILE_SENSORS):
                delay = start + n * FLOOD_S / total - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                readings = {name: float(k) for k, name in enumerate(self.names[s][r * PER_MESSAGE:(r + 1) * PER_MESSAGE])}
                body = json.dumps({"timestamp": time.time(), "readings": readings}).encode()
                self.infos.append(self.client.publish(f"{self.root}/h{s:05d}", body, qos=1))
                n += 1

    def finish(self) -> None:
        self.join(FLOOD_S + 30)
        for info in self.infos:
            info.wait_for_publish(30)
        self.client.disconnect()
        self.client.loop_stop()


class Watch(threading.Thread):
    """Every 0.2 s: which canary readings PostgreSQL has (first seen when), and the daemon's RSS."""

    def __init__(self, env, pid: int):
        super().__init__(daemon=True)
        self.env, self.proc = env, psutil.Process(pid)
        self.seen: dict[int, float] = {}
        self.rss_peak = 0
        self.peak_when_seen: dict[int, int] = {}  # canary reading -> the RSS peak by the time it was stored
        self.rss_series: list[tuple[float, int]] = []  # (time, RSS) every 5 s, printed to show the shape
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname=f"test_{self.env.run_id}", autocommit=True) as conn:
            while not self.stop.is_set():
                now = time.time()
                rss = self.proc.memory_info().rss
                self.rss_peak = max(self.rss_peak, rss)
                for (value,) in conn.execute("SELECT value FROM measurements WHERE sensor_id = 'canary'").fetchall():
                    if int(value) not in self.seen:
                        self.seen[int(value)] = now
                        self.peak_when_seen[int(value)] = self.rss_peak
                if not self.rss_series or now - self.rss_series[-1][0] >= 5:
                    self.rss_series.append((now, rss))
                self.stop.wait(0.2)


@pytest.mark.faults  # about 50 s of load: left out of make test-fast
# Alone: its memory and canary-latency bounds are about this daemon, not the machine. Beside other tests on a
# 2-core box the daemon ran 4 s behind and held the backlog in its queues (RSS rising in steps to +36 MiB after
# the first 10 s; alone +0.8 MiB).
@pytest.mark.serial
def test_hostile_sensors_and_metrics_are_refused_while_a_canary_keeps_its_latency_and_memory_stays_bounded(env, tmp_path):
    broker = mosquitto(tmp_path).start()  # deploy/mosquitto.conf's queue limits: the broker drops nothing here
    limits = {"max_sensors": MAX_SENSORS, "max_metrics_per_sensor": MAX_METRICS}
    extra = {"limits": limits, "mqtt": {"port": broker.port}}
    settings = env.migrate(env.settings(**extra))
    daemon = DaemonProcess(env.write_config(tmp_path / "config.yaml", **extra), tmp_path / "daemon.log").start()
    canary = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"canary-{uuid.uuid4().hex[:8]}")
    canary.connect("127.0.0.1", broker.port)
    canary.loop_start()
    watch = Watch(env, daemon.proc.pid)
    flood = Flood(env.root, broker.port)
    published: dict[int, float] = {}
    try:
        def report(i: int) -> None:
            published[i] = time.time()
            canary.publish(f"{env.root}/canary", json.dumps({"metric": "heartbeat", "value": i, "timestamp": published[i]}), qos=1)

        report(0)
        watch.start()
        wait_for(lambda: 0 in watch.seen, 30, what="the canary's first reading")
        time.sleep(1.0)
        rss_warm = watch.proc.memory_info().rss
        flood.start()
        started = time.monotonic()
        for i in range(1, CANARY_READINGS):
            time.sleep(max(0.0, started + (i - 1) - time.monotonic()))
            report(i)
        flood.finish()
        wait_for(lambda: len(watch.seen) == CANARY_READINGS, 60, what="every canary reading")
        # "10 s into the flood" as the daemon saw it: the peak by the time the canary reading published then was
        # stored. On a busy machine the daemon runs behind the clock, and its one rise comes later than 10 s.
        rss_peak_10s = watch.peak_when_seen[11]
        letters = read_topic(settings.config.kafka.topics.dead_letter, expected=HOSTILE_SENSORS * METRICS_EACH // PER_MESSAGE,
                             timeout=60)
        rss_end = watch.proc.memory_info().rss
        assert daemon.proc.poll() is None, daemon.log_tail()
    finally:
        watch.stop.set()
        canary.disconnect()
        canary.loop_stop()
        daemon.stop()
        broker.stop()

    delays = sorted(watch.seen[i] - published[i] for i in range(CANARY_READINGS))
    p99 = delays[min(len(delays) - 1, int(0.99 * len(delays)))]
    print(f"\ncanary delay over {len(delays)} readings: p50 {statistics.median(delays):.3f} s, p99 {p99:.3f} s, "
          f"max {delays[-1]:.3f} s (PostgreSQL polled every 0.2 s)")
    print(f"daemon RSS: warm {rss_warm / 2**20:.1f} MiB, peak {watch.rss_peak / 2**20:.1f} MiB "
          f"(+{(watch.rss_peak - rss_warm) / 2**20:.1f} MiB; +{(watch.rss_peak - rss_peak_10s) / 2**20:.1f} MiB after the "
          f"first 10 s of the flood), end {rss_end / 2**20:.1f} MiB; every 5 s: "
          + " ".join(f"{rss / 2**20:.0f}" for _t, rss in watch.rss_series))

    refused: dict[str, int] = {}
    for letter in letters:
        h = {k: v.decode() for k, v in letter.headers()}
        assert h["stage"] == "limits", h
        for reason in json.loads(h["reasons"]).values():
            refused[reason] = refused.get(reason, 0) + 1
    admitted_hostile = MAX_SENSORS - 1  # the canary was known first
    print(f"dead letters: {len(letters)} messages, refused readings by reason {refused}")
    assert len(letters) == HOSTILE_SENSORS * METRICS_EACH // PER_MESSAGE  # every hostile message refused something
    assert refused == {"too_many_sensors": (HOSTILE_SENSORS - admitted_hostile) * METRICS_EACH,
                       "too_many_metrics": admitted_hostile * (METRICS_EACH - MAX_METRICS)}
    assert env.query("SELECT count(*) FROM measurements WHERE sensor_id <> 'canary'") == [(admitted_hostile * MAX_METRICS,)]
    assert delays[-1] < MAX_CANARY_DELAY_S, delays
    assert watch.rss_peak - rss_warm < MAX_RSS_GROWTH
    assert watch.rss_peak - rss_peak_10s < MAX_RSS_GROWTH_AFTER_10S
