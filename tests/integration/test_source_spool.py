"""The agent and the log handler keep what they measured while the broker is away, across their own kill -9:
a private Mosquitto stopped for 60 s, the source killed and restarted in the middle, the broker back; every
sample and record arrives, in order per source, stored once (issue 24). And the spool's 10 MB bound holds."""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.logship import MQTTHandler
from tests.integration.clients import RunningPipeline, wait_for
from tests.integration.conftest import ROOT
from tests.integration.services import free_port, mosquitto

pytestmark = pytest.mark.faults

OUTAGE_S = 60.0


@pytest.fixture
def broker(tmp_path):
    """A private Mosquitto (persistence on: sessions survive its restart); stopped and started by the tests."""
    proc = mosquitto(tmp_path).start()
    yield proc
    proc.stop()


class Subscriber:
    """A persistent QoS 1 session on the private broker: every message in arrival order, resends included."""

    def __init__(self, port: int, topic: str):
        self.got: list[bytes] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}",
                                  clean_session=False)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_message = lambda _c, _u, msg: self.got.append(msg.payload)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def first_arrivals(payloads: list[bytes], key) -> tuple[list, int]:
    """(keys in order of first arrival, how many arrivals were repeats of an identical earlier payload)."""
    seen: dict = {}
    order, repeats = [], 0
    for body in payloads:
        k = key(json.loads(body))
        if k in seen:
            assert seen[k] == body, f"two different messages share the identity {k}"
            repeats += 1
            continue
        seen[k] = body
        order.append(k)
    return order, repeats


def agent_cmd(host: str, env, port: int, spool) -> list[str]:
    return [sys.executable, "-m", "pipeline.agents.system", "--interval", "0.5", "--host", host, "--topic-root",
            env.root, "--mqtt-host", "127.0.0.1", "--mqtt-port", str(port), "--spool", str(spool)]


def spooled_stamps(log_text: str) -> list[float]:
    return [float(t) for t in re.findall(r"event=system_sample_spooled ts=([0-9.]+)", log_text)]


def test_agent_killed_during_a_60s_broker_outage_loses_and_doubles_no_sample(env, broker, tmp_path):
    settings = env.migrate(env.settings(mqtt={"port": broker.port}))
    host, spool, log_path = f"h{env.run_id}", tmp_path / "agent.db", tmp_path / "agent.log"
    sub = Subscriber(broker.port, f"{env.root}/{host}")
    child_env = {**os.environ, "LOG_LEVEL": "DEBUG"}
    stamps = lambda: [r[0] for r in env.query(  # noqa: E731
        "SELECT extract(epoch FROM timestamp)::float8 FROM measurements WHERE sensor_id = %s AND metric = 'mem_percent' "
        "ORDER BY timestamp", (host,))]
    with RunningPipeline(settings, env.metrics()), open(log_path, "ab") as log:
        agent = subprocess.Popen(agent_cmd(host, env, broker.port, spool), stdout=log, stderr=log, cwd=ROOT, env=child_env)
        try:
            wait_for(lambda: len(stamps()) >= 4, 60, what="samples before the outage")
            broker.stop()
            time.sleep(OUTAGE_S / 2)
            agent.kill()  # kill -9, samples of the first half of the outage only on disk
            agent.wait(10)
            agent = subprocess.Popen(agent_cmd(host, env, broker.port, spool), stdout=log, stderr=log, cwd=ROOT,
                                     env=child_env)
            time.sleep(OUTAGE_S / 2)
            broker.start()
            # Reconnecting waits out paho's backoff (up to 30 s); then the replay takes a moment.
            wait_for(lambda: log_path.read_text().count("event=mqtt_connected") >= 2, 60, what="the agent reconnected")
            time.sleep(3)
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(30) == 0, log_path.read_text()[-3000:]  # 0: everything acknowledged
        finally:
            if agent.poll() is None:
                agent.kill()
        taken = spooled_stamps(log_path.read_text())
        assert len(taken) >= OUTAGE_S * 2 * 0.5, f"only {len(taken)} samples taken"  # the agent kept sampling
        # A sample spooled just before kill -9 and not yet logged may arrive too: at most one beyond the log.
        wait_for(lambda: len(stamps()) >= len(taken), 60, what=f"{len(taken)} samples in measurements")
        time.sleep(3)  # a doubled sample would come after the last one
        stored = stamps()
    sub.close()
    assert {round(t, 3) for t in taken} <= {round(t, 3) for t in stored}
    assert len(taken) <= len(stored) <= len(taken) + 1 and len(set(stored)) == len(stored)
    order, repeats = first_arrivals(sub.got, lambda m: m["timestamp"])
    assert order == sorted(order) and len(order) == len(stored)  # in order, each sample once at least
    assert "event=spool_replay source=system-agent" in log_path.read_text()
    print(f"samples={len(taken)} stored={len(stored)} transport_repeats={repeats}")


LOGGING_CHILD = """
import logging, sys, time
from pipeline.logship import MQTTHandler
app, port, root, spool, run, count = sys.argv[1:7]
h = MQTTHandler(app, "127.0.0.1", int(port), topic_root=root, spool_path=spool, close_timeout=60)
lg = logging.getLogger("child")
lg.setLevel(logging.INFO)
lg.propagate = False
lg.addHandler(h)
n = 0
while int(count) < 0 or n < int(count):
    for _ in range(10):
        lg.info("run=%s n=%d", run, n)
        n += 1
        time.sleep(0.02)
    assert h.sync(10)
    print(f"SYNCED {n - 1}", flush=True)
    time.sleep(0.3)
h.close()
print(f"CLOSED unconfirmed={h.unconfirmed} dropped={h.dropped}", flush=True)
"""


def logging_child(app, port, env, spool, run, count) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", LOGGING_CHILD, app, str(port), env.root, str(spool), str(run),
                             str(count)], stdout=subprocess.PIPE, text=True, cwd=ROOT)


def test_logging_app_killed_during_a_60s_broker_outage_loses_and_doubles_no_record(env, broker, tmp_path):
    settings = env.migrate(env.settings(mqtt={"port": broker.port}, logs={"topic_root": env.root}))
    app, spool = f"app{env.run_id}", tmp_path / "logship.db"
    sub = Subscriber(broker.port, f"{env.root}/{app}")
    with RunningPipeline(settings, env.metrics()):
        child = logging_child(app, broker.port, env, spool, 1, -1)
        try:
            wait_for(lambda: env.query("SELECT count(*) FROM logs WHERE app = %s", (app,))[0][0] >= 20, 60,
                     what="records before the outage")
            broker.stop()
            outage_started = time.monotonic()
            while time.monotonic() - outage_started < OUTAGE_S / 2:
                synced = int(child.stdout.readline().split()[1])
            child.kill()  # kill -9 just after a sync, in the pause between bursts
            child.wait(10)
            child = logging_child(app, broker.port, env, spool, 2, 300)
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))
            broker.start()
            out, _ = child.communicate(timeout=120)
            assert child.returncode == 0 and "CLOSED unconfirmed=0 dropped=0" in out, out[-2000:]
        finally:
            if child.poll() is None:
                child.kill()
        expected_2 = {f"run=2 n={i}" for i in range(300)}
        rows = lambda: dict(env.query("SELECT message, count(*) FROM logs WHERE app = %s GROUP BY message", (app,)))  # noqa: E731
        wait_for(lambda: expected_2 <= set(rows()), 60, what="every record of the second run in `logs`")
        time.sleep(3)
        stored = rows()
    sub.close()
    run_1 = sorted(int(m.rsplit("n=", 1)[1]) for m in stored if m.startswith("run=1 "))
    # Everything synced to the spool before kill -9 arrived, with no gap; at most the pause's nothing beyond.
    assert run_1 == list(range(len(run_1))) and len(run_1) >= synced + 1
    assert {m for m in stored if m.startswith("run=2 ")} == expected_2
    order, repeats = first_arrivals(sub.got, lambda m: m["id"])
    messages = [json.loads(b)["message"] for b in sub.got]
    first = list(dict.fromkeys(messages))
    key = lambda m: (int(m[4]), int(m.rsplit("n=", 1)[1]))  # noqa: E731
    assert first == sorted(first, key=key) and len(order) == len(first) == len(stored)  # in order, ids unique
    # Stored once: rows beyond one per record are only transport resends of the same message (same id), which
    # the log sink's identity collapses once it keys on the record id.
    assert sum(stored.values()) - len(stored) <= repeats
    print(f"run1={len(run_1)} synced={synced + 1} run2=300 transport_repeats={repeats}")


def test_the_10_mb_bound_holds_and_the_oldest_records_are_dropped_and_counted(tmp_path):
    port = free_port()  # nothing listens yet: the broker is away
    spool = tmp_path / "logship.db"
    bound = 10 * 1024 * 1024
    h = MQTTHandler("bounded", "127.0.0.1", port, topic_root="tbound", spool_path=str(spool), spool_max_bytes=bound,
                    buffer_size=100_000, close_timeout=60)
    lg = logging.getLogger(f"bounded-{uuid.uuid4().hex[:6]}")
    lg.propagate = False
    lg.setLevel(logging.INFO)
    lg.addHandler(h)
    total, pad = 14_000, "x" * 1000
    biggest = 0
    for i in range(total):
        lg.info("%06d %s", i, pad)
        if i % 1000 == 999:
            assert h.sync(30)
            size = sum(os.path.getsize(f"{spool}{s}") for s in ("", "-wal") if os.path.exists(f"{spool}{s}"))
            biggest = max(biggest, size)
    assert h.sync(30)
    dropped, window = h.dropped, h.shipper.window
    assert dropped > 0 and h.shipper.spool.dropped == dropped  # all of it by the bound, none by the hand-off
    # Within the bound plus the pages of about three writes of at most 256 KiB.
    assert biggest <= bound + 3 * 300 * 1024, biggest
    server = mosquitto(tmp_path, port).start()
    try:
        sub = Subscriber(port, "tbound/#")
        time.sleep(1)
        assert h.flush(60)
        time.sleep(1)
        sub.close()
        h.close()
    finally:
        server.stop()
    got = [int(json.loads(b)["message"][:6]) for b in sub.got]
    assert len(got) == len(set(got))
    # The oldest went, except those already handed to the connection when the broker was away.
    assert got == list(range(window)) + list(range(window + dropped, total))
    print(f"total={total} dropped={dropped} largest_files={biggest}")
