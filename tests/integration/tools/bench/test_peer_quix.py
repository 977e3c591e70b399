"""The benchmark's Quix Streams peer on a few hundred records: every valid reading becomes one row, every
closed 1-minute window one row per (sensor, metric) with the right figures, invalid records are counted
and dropped, and SIGTERM ends it with the exit line."""
from __future__ import annotations

import json
import signal
import subprocess
from datetime import datetime, timedelta

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from pipeline.tools.bench.peer_quix import prepare_topic
from pipeline.tools.bench.ratios import peer_python
from tests.integration.clients import wait_for
from tests.integration.conftest import ROOT

BOOTSTRAP = "127.0.0.1:9092"
T0_US = 1_796_100_000 * 1_000_000  # a minute boundary, in microseconds since the epoch
EPOCH = datetime(1970, 1, 1)
SINGLE = {f"s1-{i:04d}": 30 for i in range(6)}  # sensor -> messages, one reading each, every 5 s
MULTI = {f"s3-{i:04d}": 15 for i in range(3)}  # sensor -> messages, three readings each, every 10 s
INVALID = [b'{"metric":"temperature","value":', b'{"metric":"temperature","value":"NaN","timestamp":1796100001.0}',
           b'{"metric":"temperature","value":true,"timestamp":1796100001.0}', b'{"value":1.5,"timestamp":1796100001.0}']


def produce(topic: str) -> list[tuple[str, str, float, int]]:
    """Writes the records as the MQTT bridge would; returns the valid readings (sensor, metric, value, µs)."""
    producer = Producer({"bootstrap.servers": BOOTSTRAP})
    readings = []
    for sensor, count in SINGLE.items():
        for n in range(count):
            ts_us, value = T0_US + n * 5_000_000 + 1_234, round(20 + n * 0.25, 6)
            producer.produce(topic, key=sensor.encode(), headers=[("mqtt_topic", f"t/{sensor}".encode())], value=(
                b'{"metric":"temperature","value":%.6f,"timestamp":%d.%06d,"seq":%d}' % (value, *divmod(ts_us, 10**6), n)))
            readings.append((sensor, "temperature", value, ts_us))
    for sensor, count in MULTI.items():
        for n in range(count):
            ts_us = T0_US + n * 10_000_000 + 567
            values = {"temperature": 21 + n, "humidity": 45.5 - n, "pressure": 1013.25}
            producer.produce(topic, key=sensor.encode(), value=(
                b'{"readings":{"temperature":%d,"humidity":%.2f,"pressure":%.2f},"timestamp":%d.%06d,"seq":%d}'
                % (values["temperature"], values["humidity"], values["pressure"], *divmod(ts_us, 10**6), n)))
            readings += [(sensor, metric, float(value), ts_us) for metric, value in values.items()]
    for n in range(2 * len(INVALID)):
        producer.produce(topic, key=b"s1-0000", value=INVALID[n % len(INVALID)])
    assert producer.flush(30) == 0
    return readings


def closed_windows(readings):
    """(sensor, metric, start, end) -> values, for the windows that a later reading of the same sensor
    has closed (Quix's default per-key closing, no grace): end <= the sensor's latest event time."""
    latest = {}
    for sensor, _, _, ts_us in readings:
        latest[sensor] = max(latest.get(sensor, 0), ts_us)
    windows = {}
    for sensor, metric, value, ts_us in readings:
        start_us = ts_us - ts_us % 60_000_000
        if start_us + 60_000_000 <= latest[sensor]:
            start = EPOCH + timedelta(microseconds=start_us)
            key = (sensor, metric, start, start + timedelta(minutes=1))
            windows.setdefault(key, []).append(value)
    return windows


@pytest.mark.faults  # waits out Quix's default consumer-group join, about 25 s on the development broker
def test_peer_writes_every_valid_reading_and_each_closed_window_and_reports_at_sigterm(env, tmp_path):
    settings = env.migrate()  # the test's own database (dropped by the fixture); the peer adds its own tables
    topic, group = settings.config.kafka.topics.raw, settings.config.kafka.consumer_group
    prepare_topic(BOOTSTRAP, topic, partitions=4)
    readings = produce(topic)
    messages = sum(SINGLE.values()) + sum(MULTI.values()) + 2 * len(INVALID)
    dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={settings.config.postgres.database}"
    peer = subprocess.Popen(
        [peer_python(), "-m", "pipeline.tools.bench.peer_quix", "--bootstrap", BOOTSTRAP, "--topic", topic,
         "--group", group, "--postgres-dsn", dsn, "--readings-table", "peer_readings",
         "--aggregations-table", "peer_aggregations", "--state-dir", str(tmp_path / "state")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=open(tmp_path / "peer.log", "w"), text=True)
    try:
        def all_rows_written():
            assert peer.poll() is None, (tmp_path / "peer.log").read_text()[-3000:]
            created = env.query("SELECT 1 FROM pg_tables WHERE tablename = 'peer_readings'")
            return created and env.query("SELECT count(*) FROM peer_readings")[0][0] >= len(readings)

        wait_for(all_rows_written, timeout=120, interval=0.5, what=f"{len(readings)} rows in peer_readings")
        peer.send_signal(signal.SIGTERM)
        out, _ = peer.communicate(timeout=60)
    finally:
        if peer.poll() is None:
            peer.kill()
        # Quix's changelog topic is named after the group, not the topic: the fixture's cleanup misses it.
        admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
        changelogs = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"changelog__{group}--")]
        if changelogs:
            for future in admin.delete_topics(changelogs, operation_timeout=10).values():
                future.result(10)
    assert peer.returncode == 0, (tmp_path / "peer.log").read_text()[-3000:]

    windows = closed_windows(readings)
    assert json.loads(out.strip().splitlines()[-1]) == {
        "consumed": messages, "dropped_invalid": 2 * len(INVALID), "readings_written": len(readings),
        "aggregations_written": len(windows)}
    rows = env.query("SELECT sensor_id, metric, value, timestamp FROM peer_readings")
    assert sorted(rows) == sorted((s, m, v, EPOCH + timedelta(microseconds=us)) for s, m, v, us in readings)

    aggregates = env.query("SELECT sensor_id, metric, window_start, window_end, avg_value, min_value, max_value, count"
                           " FROM peer_aggregations")
    assert {row[:4] for row in aggregates} == set(windows) and len(aggregates) == len(windows)
    for sensor, metric, start, end, avg, low, high, count in aggregates:
        values = windows[(sensor, metric, start, end)]
        assert (low, high, count) == (min(values), max(values), len(values))
        assert avg == pytest.approx(sum(values) / len(values))
    # Each sensor's last minute is still open (no later reading closed it), so it has no row.
    assert sum(row[7] for row in aggregates) == sum(len(v) for v in windows.values()) < len(readings)
