"""A Sparkplug B edge node for the integration tests (paho, MQTT 3.1.1), payloads built by the generated module,
and the recipe deploy/formats/sparkplug.yaml made into a test's config (its own group id and topics)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.operators.sparkplug.proto import DataType, Payload
from tests.integration.conftest import deep_merge

RECIPE = Path(__file__).resolve().parents[2] / "deploy" / "formats" / "sparkplug.yaml"


def recipe_tree(env, **extra) -> dict:
    """The test's config with the recipe merged in, reading only spBv1.0/<its group>/# (parallel tests apart)."""
    recipe = yaml.safe_load(RECIPE.read_text())
    tree = deep_merge(env.tree(), recipe)
    tree = deep_merge(tree, {"mqtt": {"topics": [f"spBv1.0/{env.root}/#"]}})
    return deep_merge(tree, extra)


_last_ms = [0]


def payload(metrics: list[dict], seq: int | None = None) -> bytes:
    """A payload stamped now, in ms, a later ms than the one before (readings of one metric never share a time)."""
    _last_ms[0] = max(int(time.time() * 1000), _last_ms[0] + 1)
    p = Payload(timestamp=_last_ms[0])
    if seq is not None:
        p.seq = seq
    for m in metrics:
        p.metrics.add(**m)
    return p.SerializeToString()


class EdgeNode:
    """One edge node (group `group`, node `node`) with its bdSeq and seq counters, and a listener for NCMD."""

    def __init__(self, group: str, node: str, bd_seq: int = 0):
        self.group, self.node, self.bd_seq, self.seq = group, node, bd_seq, 0
        self.commands: list[Payload] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-{group}-{node}")
        self.client.will_set(self.topic("NDEATH"), self.death(), qos=1)
        self.client.on_message = self._on_message
        self._subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect("127.0.0.1", 1883)
        self.client.loop_start()
        self.client.subscribe(f"spBv1.0/{group}/NCMD/{node}", qos=1)
        assert self._subscribed.wait(10)

    def _on_message(self, _c, _u, msg) -> None:
        p = Payload()
        p.ParseFromString(msg.payload)
        self.commands.append(p)

    def topic(self, kind: str, device: str = "") -> str:
        return f"spBv1.0/{self.group}/{kind}/{self.node}" + (f"/{device}" if device else "")

    def death(self) -> bytes:
        return payload([dict(name="bdSeq", datatype=DataType.UInt64, long_value=self.bd_seq)])

    def send(self, kind: str, metrics: list[dict], device: str = "", seq: int | None = None) -> None:
        """Publish with the next seq (0 for an NBIRTH), or `seq` as given (a gap)."""
        if kind == "NBIRTH":
            self.seq = 0
            metrics = [dict(name="bdSeq", datatype=DataType.UInt64, long_value=self.bd_seq),
                       dict(name="Node Control/Rebirth", datatype=DataType.Boolean, boolean_value=False), *metrics]
        elif seq is not None:
            self.seq = seq
        else:
            self.seq = (self.seq + 1) % 256
        data = payload(metrics, None if kind == "NDEATH" else self.seq)
        self.client.publish(self.topic(kind, device), data, qos=1).wait_for_publish(10)

    def raw(self, kind: str, data: bytes, device: str = "") -> None:
        self.client.publish(self.topic(kind, device), data, qos=1).wait_for_publish(10)

    def rebirths(self) -> int:
        return sum(1 for p in self.commands for m in p.metrics
                   if m.name == "Node Control/Rebirth" and m.boolean_value)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


BOILER_BIRTH = [dict(name="Inputs/Temperature", alias=1, datatype=DataType.Float, float_value=20.5),
                dict(name="Outputs/Pump", alias=2, datatype=DataType.Boolean, boolean_value=True),
                dict(name="Properties/Model", alias=3, datatype=DataType.String, string_value="PLC-9")]


def temperature(value: float, alias: int = 1) -> list[dict]:
    return [dict(alias=alias, datatype=DataType.Float, float_value=value)]


class StateWatch:
    """The retained spBv1.0/STATE/<host_id> messages as a Sparkplug edge node sees them; clears the topic on close."""

    def __init__(self, host_id: str):
        import json

        self.topic = f"spBv1.0/STATE/{host_id}"
        self.states: list[dict] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"state-{host_id}")
        self.client.on_message = lambda _c, _u, msg: msg.payload and self.states.append(json.loads(msg.payload))
        self.client.connect("127.0.0.1", 1883)
        self.client.loop_start()
        self.client.subscribe(self.topic, qos=1)

    def close(self) -> None:
        self.client.publish(self.topic, b"", qos=1, retain=True).wait_for_publish(10)  # no retained state left
        self.client.disconnect()
        self.client.loop_stop()
