"""Contract of the MQTT fast path with paho-mqtt: the version it was written for, every private name it uses,
nothing of paho's private names outside its module, and the same messages and acknowledgements as paho's
plain path, against a scripted broker on a local socket (no services needed)."""
from __future__ import annotations

import ast
import importlib.metadata
import inspect
import re
import socket
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.ingest import mqtt_client
from pipeline.ingest.mqtt_bridge import plain_on_message
from pipeline.ingest.mqtt_client import BufferedClient
from tests.unit.ingest.test_mqtt_client import varint

ROOT = Path(__file__).resolve().parents[3]
FENCE = ROOT / "pipeline/ingest/mqtt_client.py"
RECHECK = ("pipeline/ingest/mqtt_client.py relies on paho-mqtt's private names (listed in its docstring). Before "
           "changing the paho-mqtt pin: read paho's client.py for each of them (what _packet_read reads through "
           "_sock_recv, when _handle_on_message is called, what _packet_queue sends), fix the module, run this test "
           "and tests/integration/test_end_to_end.py, then set WRITTEN_FOR and requirements.txt to the new version. "
           "Until then mqtt.fast_path: false runs on paho's public API only.")


def test_installed_and_pinned_paho_are_the_version_the_fast_path_was_written_for():
    installed = importlib.metadata.version("paho-mqtt")
    pins = re.findall(r"^paho-mqtt\s*([=<>!~]=?\s*[^\s#]+.*)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert installed == mqtt_client.WRITTEN_FOR, \
        f"paho-mqtt {installed} is installed, the fast path was written for {mqtt_client.WRITTEN_FOR}. {RECHECK}"
    assert pins == [f"=={mqtt_client.WRITTEN_FOR}"], \
        f"requirements.txt must pin paho-mqtt=={mqtt_client.WRITTEN_FOR} exactly, found {pins}. {RECHECK}"


# name -> the parameters paho's method has (the fast path calls or overrides it with exactly these)
METHODS = {
    "_sock_recv": ["self", "bufsize"],
    "_packet_read": ["self"],
    "_loop_rc_handle": ["self", "rc"],
    "_packet_queue": ["self", "command", "packet", "mid", "qos", "info"],
    "_handle_on_message": ["self", "message"],
}


def _lock(v) -> bool:
    return callable(getattr(v, "acquire", None)) and callable(getattr(v, "release", None))


# name -> what the attribute of a new, unconnected Client must look like
ATTRIBUTES = {
    "_sock": lambda v: v is None,
    "_in_packet": lambda v: isinstance(v, dict) and v.get("command") == 0,
    "_protocol": lambda v: v == mqtt.MQTTv311,
    "_in_callback_mutex": _lock,
    "_msgtime_mutex": _lock,
    "_last_bytes_received": lambda v: isinstance(v, float),
    "_userdata": lambda v: v is None,
}


def test_the_declared_private_names_are_the_ones_checked_here():
    assert set(mqtt_client.PAHO_CLIENT_PRIVATE) == set(METHODS) | set(ATTRIBUTES), RECHECK


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_private_method_exists_with_its_parameters(name):
    method = getattr(mqtt.Client, name, None)
    assert callable(method), f"paho's Client has no method {name}. {RECHECK}"
    params = list(inspect.signature(method).parameters)
    assert params == METHODS[name], f"paho's Client.{name}{params} is not {METHODS[name]}. {RECHECK}"


@pytest.mark.parametrize("name", sorted(ATTRIBUTES))
def test_each_private_attribute_exists_as_expected(name):
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    assert hasattr(client, name), f"paho's Client has no attribute {name}. {RECHECK}"
    assert ATTRIBUTES[name](getattr(client, name)), f"paho's Client.{name} is {getattr(client, name)!r}. {RECHECK}"


def test_a_message_keeps_its_topic_bytes_in_topic_and_paho_calls_what_the_fast_path_overrides():
    assert mqtt_client.PAHO_MESSAGE_PRIVATE == ("_topic",)
    assert mqtt.MQTTMessage(1, b"a/\xff")._topic == b"a/\xff", f"MQTTMessage._topic changed. {RECHECK}"
    assert "self._sock_recv(" in inspect.getsource(mqtt.Client._packet_read), \
        f"paho's reader no longer reads through _sock_recv: the read buffer would be bypassed. {RECHECK}"
    assert "self._handle_on_message(" in inspect.getsource(mqtt.Client._handle_publish), \
        f"paho no longer hands parsed PUBLISH packets to _handle_on_message. {RECHECK}"


OWN = {"_rbuf", "_rpos", "_rsock", "read_linger_s", "_last_read_n", "_lingered", "_grow", "_grow_need", "_own_buffer", "_fill", "_read_publishes", "on_publish_raw", "ack_many",
       "max_packet_bytes", "on_too_large_raw", "_skip", "_refuse_too_large", "_too_large",
       "PAHO", "WAIT", "loop_read"}  # loop_read: paho's public method, overridden on purpose


def test_the_subclass_adds_no_name_paho_already_has():
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    clashes = sorted(n for n in OWN - {"loop_read"} if hasattr(client, n))
    assert clashes == [], f"BufferedClient's own names now exist in paho's Client: {clashes}. {RECHECK}"


def private_attributes(path: Path, skip_self: bool) -> set[str]:
    """Names starting with one underscore that a module reads, writes (on `self` too unless skip_self) or
    defines as a method (an override)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (not skip_self and isinstance(node, ast.FunctionDef) and node.name.startswith("_")
                and not node.name.startswith("__")):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if skip_self and isinstance(node.value, ast.Name) and node.value.id == "self":
                continue
            names.add(node.attr)
    return names


def test_the_fence_uses_only_the_private_names_it_declares():
    used = private_attributes(FENCE, skip_self=False) - OWN
    declared = set(mqtt_client.PAHO_CLIENT_PRIVATE) | set(mqtt_client.PAHO_MESSAGE_PRIVATE)
    assert used == declared, (f"mqtt_client.py uses {sorted(used - declared)} undeclared, declares "
                              f"{sorted(declared - used)} unused: keep PAHO_CLIENT_PRIVATE and its docstring exact")


def test_no_other_module_touches_paho_private_names():
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    paho_private = {n for n in set(dir(mqtt.Client)) | set(vars(client)) | set(dir(mqtt.MQTTMessage))
                    if n.startswith("_") and not n.startswith("__")}
    offenders = {}
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        if path == FENCE or "paho" not in path.read_text():
            continue
        found = private_attributes(path, skip_self=True) & paho_private
        if found:
            offenders[str(path.relative_to(ROOT))] = sorted(found)
    assert offenders == {}, f"paho's private names outside pipeline/ingest/mqtt_client.py: {offenders}"


# -- behaviour: the fast path and paho's plain path see the same messages and send the same PUBACKs -------------

def _publish(topic: bytes, payload: bytes, qos: int, mid: int, dup: bool, retain: bool, v5: bool) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"") + (b"\0" if v5 else b"")
    flags = (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    return bytes([0x30 | flags]) + varint(len(body) + len(payload)) + body + payload


MESSAGES = [  # (topic, payload, qos, mid, dup, retain)
    (b"s/r", b"20.5", 1, 3, False, True),  # the broker's retained copy, sent for the new subscription
    (b"s/a", b'{"value": 1}', 1, 1, False, False),
    (b"s/b", b"21.5", 0, 0, False, False),
    (b"s/a", b'{"value": 1}', 1, 1, True, False),  # a resend
    ("s/zürich".encode(), b"x" * 300_000, 1, 2, False, False),  # longer than one read
    (b"s/big", bytes(range(256)) * 12_288, 1, 4, False, False),  # 3 MiB: gathered over many reads
    (b"s/c", b"", 1, 65535, False, False),
]


class ScriptedBroker:
    """Accepts one client: CONNACK, SUBACK, then `packets` (MESSAGES by default), then collects what the client
    sends back."""

    def __init__(self, v5: bool, packets: list[bytes] | None = None):
        self.v5 = v5
        self.packets = packets if packets is not None else [_publish(*m, v5=v5) for m in MESSAGES]
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received = b""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _packet(self, conn: socket.socket) -> tuple[int, bytes]:
        head = conn.recv(1)
        length, mult = 0, 1
        while True:
            byte = conn.recv(1)[0]
            length += (byte & 0x7F) * mult
            mult *= 128
            if byte < 0x80:
                break
        body = b""
        while len(body) < length:
            body += conn.recv(length - len(body))
        return head[0], body

    def _run(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            self._packet(conn)  # CONNECT
            conn.sendall(b"\x20\x03\x00\x00\x00" if self.v5 else b"\x20\x02\x00\x00")
            cmd, body = self._packet(conn)
            assert cmd == 0x82, cmd  # SUBSCRIBE
            conn.sendall(b"\x90" + (b"\x04" + body[:2] + b"\x00\x01" if self.v5 else b"\x03" + body[:2] + b"\x01"))
            for packet in self.packets:
                conn.sendall(packet)
            conn.settimeout(5)
            try:
                while chunk := conn.recv(65536):
                    self.received += chunk
            except OSError:
                pass

    def close(self) -> None:
        self.server.close()


@pytest.mark.parametrize("v5", [False, True], ids=["3.1.1", "5"])
@pytest.mark.parametrize("fast", [True, False], ids=["fast_path", "plain"])
def test_both_paths_hand_over_the_same_messages_and_send_the_same_acks(fast, v5):
    broker = ScriptedBroker(v5)
    got = []
    done = threading.Event()

    def handler(topic, payload, qos, mid, dup, retain):
        got.append((topic, payload, qos, mid, dup, retain))
        if len(got) == len(MESSAGES):
            done.set()

    kwargs = dict(client_id="contract", protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311, manual_ack=True)
    if fast:
        client = BufferedClient(CallbackAPIVersion.VERSION2, **kwargs)
        client.on_publish_raw = handler
    else:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, **kwargs)
        client.on_message = plain_on_message(handler)
    try:
        client.connect("127.0.0.1", broker.port, keepalive=60)
        client.subscribe("s/#", qos=1)
        client.loop_start()
        assert done.wait(10), f"received {len(got)} of {len(MESSAGES)}"
        assert got == MESSAGES
        mids = [mid for _t, _p, qos, mid, _d, _r in got if qos]
        if fast:
            client.ack_many(mids)
        else:
            for mid in mids:
                client.ack(mid, 1)
        expected = b"".join(b"\x40\x02" + mid.to_bytes(2, "big") for mid in mids)
        deadline = time.monotonic() + 5
        while expected not in broker.received and time.monotonic() < deadline:
            time.sleep(0.02)
        assert expected in broker.received, broker.received
    finally:
        client.disconnect()
        client.loop_stop()
        broker.close()
