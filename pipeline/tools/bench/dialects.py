"""Payload dialects the benchmark can publish (`--dialect NAME`): what a device family sends, and the recipe
that maps it, so the cost per reading of a mapped dialect is measured beside native JSON in one run.

One entry per dialect: the topic a simulated device publishes on (its family's own), the payload of
one message (the reading(s) carry the publish time as their timestamp, unique per sensor, as the benchmark's
latency and loss figures need), the shipped recipe (deploy/formats/<recipe>.yaml) merged into the daemon's
config, and the sensor id the daemon stores a simulated device's readings under (the benchmark counts loss and
duplicates by it). Add a dialect with `register(Dialect(...))`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from ...config import recipes
from ...operators.sparkplug.proto import DataType, Payload as SparkplugPayload
from .configtree import deep_merge
from .loadgen import payload_for

# (seq, publish time, readings per message) -> payload bytes; seq is the sensor's own message number (0, 1, ...
# in a level) for a dialect with `numbered`, else the benchmark's sequence over all messages.
Payload = Callable[[int, float, int], bytes]
# (root, sensors, readings per message) -> messages (topic, payload) published once before the load, in order
# (a dialect whose data needs a definition first: a Sparkplug B birth certificate per device).
Setup = Callable[[str, list[str], int], list[tuple[str, bytes]]]


@dataclass(frozen=True)
class Dialect:
    """One payload dialect: `topic` has {sensor} (and {root}, the benchmark's own level, for a built-in format);
    `recipe` names deploy/formats/<recipe>.yaml (None: a built-in format, no mapping); `setup`, what is published
    before the load (not counted in its figures)."""

    name: str
    topic: str
    payload: Payload
    recipe: str | None = None
    doc: str = ""
    setup: Setup | None = None
    # Renames laid over the recipe's, so the dialect's readings land on native JSON's metrics (temperature, ...)
    # and cost the same downstream (thresholds, detection, windows), as a site renames its own.
    rename: dict[str, str] = field(default_factory=dict)
    # The sensor id the daemon stores the readings of the simulated device {sensor} under (its naming rule: a
    # Sparkplug B device is group_node_device); the benchmark counts a level's readings by the part before {sensor}.
    sensor_id: str = "{sensor}"
    # The payload's seq counts per device (Sparkplug's per edge node), not over all messages.
    numbered: bool = False

    def sensor_prefix(self, prefix: str) -> str:
        """The stored sensor ids of the simulated devices whose names start with `prefix` start with this."""
        return self.sensor_id.partition("{sensor}")[0] + prefix

    def subscriptions(self) -> list[str]:
        """The recipe's own MQTT filters for this dialect's devices (spBv1.0/#: a format's topics are subscribed as
        configured), to add to the benchmark's root; none for a mapping (the daemon subscribes to its topics)."""
        if not self.recipe:
            return []
        from paho.mqtt.client import topic_matches_sub

        device = self.topic.format(root="bench", sensor="s1-0000")
        return [t for t in (recipes.load(self.recipe).get("mqtt") or {}).get("topics") or []
                if topic_matches_sub(t, device)]

    def config(self) -> dict:
        """The config fragment the daemon needs for this dialect: its recipe as shipped, topics unchanged. The
        benchmark's broker is its own, so a dialect publishes on its family's real topics (tele/<id>/SENSOR) and
        the daemon routes and keys them as it would in production (under one more level the mapping's device
        would sit one level deeper than the built-in formats' and the MQTT thread would take its slower key path)."""
        if not self.recipe:
            return {}
        tree = recipes.load(self.recipe)
        for source in tree.get("sources") or []:
            source["rename"] = {**(source.get("rename") or {}), **self.rename}
        if isinstance(tree.get("sparkplug"), dict):  # the Sparkplug host names metrics itself (sparkplug.rename)
            tree["sparkplug"]["rename"] = {**(tree["sparkplug"].get("rename") or {}), **self.rename}
        return tree


DIALECTS: dict[str, Dialect] = {}


def register(dialect: Dialect) -> Dialect:
    DIALECTS[dialect.name] = dialect
    return dialect


def _drift(seq: int, now: float) -> float:
    """The same healthy-sensor values as native JSON (loadgen.payload_for)."""
    return 0.5 * math.sin(now / 600.0) + (seq % 7) * 1e-6


def tasmota_payload(seq: int, now: float, readings: int) -> bytes:
    """tele/<device>/SENSOR: one DS18B20 probe (1 reading) or a BME280 (3). Tasmota writes local time to the
    second; here UTC to the microsecond, so two messages of one sensor never share a timestamp."""
    d = _drift(seq, now)
    when = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f").encode()
    if readings == 1:
        return b'{"Time":"%s","DS18B20":{"Id":"01144A0CB2AA","Temperature":%.6f},"TempUnit":"C"}' % (when, 21.0 + d)
    return (b'{"Time":"%s","BME280":{"Temperature":%.6f,"Humidity":%.6f,"Pressure":%.6f},"PressureUnit":"hPa",'
            b'"TempUnit":"C"}' % (when, 21.0 + d, 45.0 + d, 1013.0 + d))


def telegraf_payload(seq: int, now: float, readings: int) -> bytes:
    """telegraf/<host>/<plugin>: one line of InfluxDB line protocol, the time in ns (Telegraf's default output)."""
    d = _drift(seq, now)
    ns = round(now * 1e9)
    if readings == 1:
        return b"env temperature=%.6f %d\n" % (21.0 + d, ns)
    return b"env temperature=%.6f,humidity=%.6f,pressure=%.6f %d\n" % (21.0 + d, 45.0 + d, 1013.0 + d, ns)


register(Dialect("native", "{root}/{sensor}", payload_for, None,
                 "the pipeline's own JSON on sensors/<id> (the built-in json format)"))
NATIVE_METRICS = ("temperature", "humidity", "pressure")
register(Dialect("tasmota", "tele/{sensor}/SENSOR", tasmota_payload, "tasmota",
                 "Tasmota telemetry through deploy/formats/tasmota.yaml",
                 rename={"ds18b20_temperature": "temperature", **{f"bme280_{m}": m for m in NATIVE_METRICS}}))
register(Dialect("telegraf", "telegraf/{sensor}/env", telegraf_payload, "telegraf",
                 "Telegraf's line protocol through deploy/formats/telegraf.yaml",
                 rename={f"env_{m}": m for m in NATIVE_METRICS}))


# Sparkplug B: each simulated device is a device (PLC1) of an edge node of its own in group Bench, so an edge
# node's seq is its device's message number (one publisher process owns a device, and so its node, whole).
SP_GROUP, SP_DEVICE = "Bench", "PLC1"
SP_METRICS = ("Inputs/Temperature", "Inputs/Humidity", "Inputs/Pressure")  # aliases 1, 2, 3
SP_BASE = (21.0, 45.0, 1013.0)


def sparkplug_payload(n: int, now: float, readings: int) -> bytes:
    """DDATA: the metrics by alias alone, each with its datatype and the publish time (ms, Sparkplug's unit) as its
    timestamp, as Eclipse Tahu's edge node sends a report by exception; seq after the births (0 and 1), mod 256."""
    d = _drift(n, now)
    ms = round(now * 1000)
    p = SparkplugPayload(timestamp=ms, seq=(n + 2) % 256)
    for a in range(readings):
        p.metrics.add(alias=a + 1, timestamp=ms, datatype=DataType.Double, double_value=SP_BASE[a] + d)
    return p.SerializeToString()


def sparkplug_setup(_root: str, sensors: list[str], readings: int) -> list[tuple[str, bytes]]:
    """Per simulated device: its edge node's NBIRTH (seq 0, bdSeq, the rebirth control) and the device's DBIRTH
    (seq 1, each metric's name, alias and datatype). The births' values are null: a birth adds no reading to the
    level's count, so every reading counted is one the load published."""
    ms = round(time.time() * 1000)
    out = []
    for s in sensors:
        node = SparkplugPayload(timestamp=ms, seq=0)
        node.metrics.add(name="bdSeq", timestamp=ms, datatype=DataType.UInt64, long_value=0)
        node.metrics.add(name="Node Control/Rebirth", timestamp=ms, datatype=DataType.Boolean, boolean_value=False)
        device = SparkplugPayload(timestamp=ms, seq=1)
        for a, name in enumerate(SP_METRICS[:readings]):
            device.metrics.add(name=name, alias=a + 1, timestamp=ms, datatype=DataType.Double, is_null=True)
        out += [(f"spBv1.0/{SP_GROUP}/NBIRTH/{s}", node.SerializeToString()),
                (f"spBv1.0/{SP_GROUP}/DBIRTH/{s}/{SP_DEVICE}", device.SerializeToString())]
    return out


register(Dialect("sparkplug", f"spBv1.0/{SP_GROUP}/DDATA/{{sensor}}/{SP_DEVICE}", sparkplug_payload, "sparkplug",
                 "Sparkplug B DDATA by alias through the host application (deploy/formats/sparkplug.yaml)",
                 setup=sparkplug_setup, sensor_id=f"{SP_GROUP}_{{sensor}}_{SP_DEVICE}", numbered=True,
                 rename={"inputs_" + m: m for m in NATIVE_METRICS}))


def level_tree(base: dict, dialect: Dialect) -> dict:
    """The daemon's config for one level of `dialect`: the benchmark's own (`base`) with this dialect's recipe only,
    no earlier level's, subscribed to the benchmark's root and the dialect's devices (a recipe's mqtt.topics, the
    defaults plus its family's, would replace the root with topics this broker never carries)."""
    tree = deep_merge(base, dialect.config())
    return deep_merge(tree, {"mqtt": {"topics": list(base["mqtt"]["topics"]) + dialect.subscriptions()}})


def publish_setup(dialect: Dialect, host: str, port: int, root: str, sensors: list[str], readings: int) -> int:
    """A dialect's set-up messages, QoS 1, each acknowledged by the broker; how many."""
    if dialect.setup is None:
        return 0
    import paho.mqtt.client as mqtt

    messages = dialect.setup(root, sensors, readings)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-setup-{dialect.name}")
    client.max_inflight_messages_set(1000)
    client.connect(host, port)
    client.loop_start()
    try:
        for info in [client.publish(t, p, qos=1) for t, p in messages]:
            info.wait_for_publish(30)
    finally:
        client.loop_stop()
        client.disconnect()
    return len(messages)


def compare(bench, args, native: dict) -> dict:
    """One level per `--dialect`, at the native level's rate and readings per message: CPU per reading of each
    against native JSON's (`ratio`), with its loss, so a cheap but lossy mapping cannot pass."""
    base = native["cpu_s_per_million_readings"]
    out = []
    for name in args.dialect:
        bench.log(f"dialect {name}: offering {native['offered_rate']:,.0f} msg/s for {args.duration:.0f} s")
        r = bench.run(native["offered_rate"], readings=native["readings_per_message"], dialect=name)
        out.append({"dialect": name, "recipe": DIALECTS[name].recipe, "offered_rate": r["offered_rate"],
                    "sustained_rate": r["sustained_rate"], "readings_per_message": r["readings_per_message"],
                    "lost": r["lost"], "duplicated": r["duplicated"],
                    "cpu_s_per_million_readings": r["cpu_s_per_million_readings"],
                    "native_cpu_s_per_million_readings": base,
                    "ratio": round(r["cpu_s_per_million_readings"] / base, 3) if base else None,
                    "latency_ms": r["latency_ms"], "daemon_cores": r["daemon_cores"],
                    "daemon_threads": r["daemon_threads"]})
    return {"dialects": out}


def lines(report: dict) -> list[str]:
    """The dialect comparison as text, each ratio with the figures it was made of."""
    return [f"dialect {d['dialect']} (deploy/formats/{d['recipe']}.yaml) at {d['offered_rate']:,.0f} msg/s, "
            f"{d['readings_per_message']} reading(s) per message: {d['cpu_s_per_million_readings']:.1f} CPU-s per million "
            f"readings against native JSON's {d['native_cpu_s_per_million_readings']:.1f}: ratio {d['ratio']}; "
            f"sustained {d['sustained_rate']:,.0f} msg/s, lost {d['lost']}, duplicated {d['duplicated']}; daemon threads, "
            f"cores: " + ", ".join(f"{n} {c:.3f}" for n, c in list(d["daemon_threads"].items())[:8])
            for d in report.get("dialects") or []]
