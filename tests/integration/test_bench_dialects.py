"""`bench --dialect`: a dialect's set-up messages (what its data needs defined first) reach the broker before the
load, in order; a short run of mapped dialects through the real daemon loses nothing."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from pipeline.tools.bench.dialects import DIALECTS
from tests.integration.conftest import ROOT


def test_a_dialects_setup_messages_reach_the_broker_before_the_load():
    """A dialect whose data needs a definition first (Sparkplug B births) publishes it through `setup`."""
    import uuid

    import paho.mqtt.client as mqtt

    from pipeline.tools.bench.dialects import Dialect, publish_setup

    root = f"setup{uuid.uuid4().hex[:8]}"
    got: list[tuple[str, bytes]] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda _c, _u, m: got.append((m.topic, m.payload))
    sub.connect("127.0.0.1", 1883)
    sub.subscribe(f"{root}/#", qos=1)
    sub.loop_start()
    time.sleep(0.3)
    d = Dialect("births", "{root}/{sensor}", DIALECTS["native"].payload,
                setup=lambda r, sensors, n: [(f"{r}/birth/{s}", b"%d" % n) for s in sensors])
    try:
        assert publish_setup(d, "127.0.0.1", 1883, root, ["a", "b"], 3) == 2
        deadline = time.time() + 5
        while len(got) < 2 and time.time() < deadline:
            time.sleep(0.05)
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert got == [(f"{root}/birth/a", b"3"), (f"{root}/birth/b", b"3")]
    assert publish_setup(DIALECTS["tasmota"], "127.0.0.1", 1, root, ["a"], 1) == 0  # none: nothing to connect to


# A daemon per level, three levels: the `faults` tier's (tests of tens of seconds), as the bench's other long smoke.
@pytest.mark.faults
def test_mapped_dialects_through_the_real_daemon_lose_nothing_and_report_their_ratio():
    """Each dialect's level reaches the daemon (subscribed to its family's topics), its set-up first (Sparkplug B
    births, or its DDATA would be refused), and is counted under the sensor ids the daemon stores (a Sparkplug
    device's group_node_device): every reading published is stored once, in PostgreSQL and in Redis."""
    proc = subprocess.run([sys.executable, "-m", "pipeline.tools.bench", "--rate", "500", "--duration", "3",
                           "--sensors", "50", "--dialect", "sparkplug", "--dialect", "tasmota", "--json"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["lost"] == 0 and report["duplicated"] == 0
    assert [d["dialect"] for d in report["dialects"]] == ["sparkplug", "tasmota"]
    for d in report["dialects"]:
        assert d["lost"] == 0 and d["duplicated"] == 0, d["dialect"]
        assert d["sustained_rate"] > 0 and d["cpu_s_per_million_readings"] > 0, d["dialect"]
        assert d["ratio"] == round(d["cpu_s_per_million_readings"] / report["cpu_s_per_million_readings"], 3)
