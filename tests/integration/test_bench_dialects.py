"""`bench --dialect`: a dialect's set-up messages (what its data needs defined first) reach the broker before the
load, in order."""
from __future__ import annotations

import time

from pipeline.tools.bench.dialects import DIALECTS


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
