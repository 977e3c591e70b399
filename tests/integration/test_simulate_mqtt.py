"""Device simulator against the real Mosquitto: every QoS 1 message arrives, at the asked rate."""
from __future__ import annotations

import re
import secrets
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from pipeline.tools.simulate import run

HOST, PORT = "127.0.0.1", 1883


@pytest.mark.integration
def test_simulator_delivers_every_message_at_the_rate(capsys):
    root = f"simtest{secrets.token_hex(4)}"  # our own topic tree: other publishers cannot disturb the count
    received: list[str] = []
    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{root}-sub")
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{root}/#", qos=1)
    sub.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
    sub.on_message = lambda c, u, msg: received.append(msg.topic)
    sub.connect(HOST, PORT, keepalive=30)
    sub.loop_start()
    try:
        assert subscribed.wait(5), "subscription not acknowledged"
        published = run(["--host", HOST, "--port", str(PORT), "--root", root, "--sensors", "5",
                         "--rate", "200", "--duration", "2", "--qos", "1"])
        deadline = time.monotonic() + 10
        while len(received) < published and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # anything beyond the count would be a duplicate; give it a moment to show up
    finally:
        sub.disconnect()
        sub.loop_stop()

    line = capsys.readouterr().out.strip().splitlines()[-1]
    m = re.fullmatch(r"published=(\d+) duration_s=([\d.]+) rate=([\d.]+)", line)
    assert m, line
    assert int(m.group(1)) == published
    assert len(received) == published
    assert published == pytest.approx(400, rel=0.10)
    assert float(m.group(3)) == pytest.approx(200, rel=0.10)
    assert {t.split("/")[1] for t in received} == {f"sim-{i:04d}" for i in range(5)}
