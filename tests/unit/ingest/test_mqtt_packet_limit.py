"""mqtt.max_packet_bytes: a PUBLISH over the limit is reported by topic and size, never held whole, and the
messages after it still arrive (a scripted broker on a local socket, no services needed)."""
from __future__ import annotations

import threading
import tracemalloc

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from pipeline import config as c
from pipeline.ingest.mqtt_client import BufferedClient, publish_head
from tests.unit.ingest.test_mqtt_client import publish
from tests.unit.ingest.test_mqtt_fastpath_contract import ScriptedBroker, _publish

LIMIT = 64 * 1024
BIG = 8 * 1024 * 1024


def test_the_head_of_a_publish_is_read_without_its_payload():
    packet = publish(b"sensors/s1", b"x" * 100_000, mid=0x0102)
    head_only = packet[:20]
    assert publish_head(head_only, 0, v5=False) == (len(packet), b"sensors/s1", 1, 0x0102, False, False, 100_000)
    assert publish_head(packet[:9], 0, v5=False) is None  # the topic is not all here yet
    assert publish_head(publish(b"s/a", b"12", qos=0)[:7], 0, v5=False)[1:] == (b"s/a", 0, 0, False, False, 2)


def test_the_head_of_an_mqtt5_publish_skips_its_properties():
    packet = publish(b"sensors/s1", b"y" * 5000, props=b"\x01\x01")  # payload format indicator
    assert publish_head(packet[:30], 0, v5=True)[-1] == 5000
    assert publish_head(packet[:17], 0, v5=True) is None  # the properties length is not here yet


def test_a_malformed_or_foreign_packet_is_not_read_as_a_publish():
    assert publish_head(b"\x20\x02\x00\x00", 0, v5=False) is False  # CONNACK
    assert publish_head(b"\x32\x04\x00\x09ab", 0, v5=False) is False  # topic longer than the packet


def receive(packets: list[bytes], expected: int, v5: bool, limit: int = LIMIT) -> tuple[list, list, int]:
    """(messages, refusals, peak bytes allocated while receiving) of a BufferedClient limited to `limit`."""
    broker = ScriptedBroker(v5, packets)
    got, refused = [], []
    done = threading.Event()

    def on_message(topic, payload, qos, mid, dup, retain):
        got.append((topic, payload, qos, mid, dup, retain))
        if len(got) + len(refused) == expected:
            done.set()

    def on_too_large(topic, size, qos, mid, dup, retain):
        refused.append((topic, size, qos, mid, dup, retain))
        if len(got) + len(refused) == expected:
            done.set()

    client = BufferedClient(CallbackAPIVersion.VERSION2, client_id="limit", protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                            manual_ack=True, max_packet_bytes=limit)
    client.on_publish_raw, client.on_too_large_raw = on_message, on_too_large
    tracemalloc.start()
    try:
        client.connect("127.0.0.1", broker.port, keepalive=60)
        client.subscribe("s/#", qos=1)
        tracemalloc.reset_peak()
        client.loop_start()
        assert done.wait(20), f"received {len(got)} and refused {len(refused)} of {expected}"
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        client.disconnect()
        client.loop_stop()
        broker.server.close()
    return got, refused, peak


@pytest.mark.parametrize("v5", [False, True], ids=["3.1.1", "5"])
def test_a_publish_over_the_limit_is_refused_by_topic_and_size_and_the_stream_goes_on(v5):
    big = bytes(range(256)) * (BIG // 256)
    packets = [_publish(b"s/a", b"20.5", 1, 1, False, False, v5),
               _publish(b"s/big", big, 1, 2, False, False, v5),          # gathered over many reads
               _publish(b"s/b", b"21.5", 0, 0, False, False, v5),
               _publish(b"s/mid", b"m" * (LIMIT + 10), 1, 3, True, False, v5),  # in one read: complete, yet too large
               _publish(b"s/c", b"x" * (LIMIT - 100), 1, 4, False, False, v5)]  # just under the limit
    # Everything in one write, as a broker sends a backlog: the too-large packets sit among the others.
    got, refused, peak = receive([b"".join(packets)], expected=5, v5=v5)
    assert got == [(b"s/a", b"20.5", 1, 1, False, False), (b"s/b", b"21.5", 0, 0, False, False),
                   (b"s/c", b"x" * (LIMIT - 100), 1, 4, False, False)]
    assert refused == [(b"s/big", BIG, 1, 2, False, False), (b"s/mid", LIMIT + 10, 1, 3, True, False)]
    # Reads are 256 KiB; the 8 MiB packet was never gathered (without the limit the peak is above 8 MiB).
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes while receiving"


def test_without_a_limit_the_large_publish_is_delivered_whole():
    packets = [_publish(b"s/big", b"z" * (BIG // 8), 1, 2, False, False, False), _publish(b"s/a", b"1", 0, 0, False, False, False)]
    got, refused, _peak = receive(packets, expected=2, v5=False, limit=0)
    assert [(t, len(p)) for t, p, *_ in got] == [(b"s/big", BIG // 8), (b"s/a", 1)] and refused == []


def test_the_packet_limit_must_leave_room_for_a_valid_payload():
    assert c.parse({}, {}).mqtt.max_packet_bytes == 262_144
    with pytest.raises(c.ConfigError, match=r"^mqtt.max_packet_bytes: must be at least validation.max_payload_bytes"):
        c.parse({"mqtt": {"max_packet_bytes": 65536}}, {})
    assert c.parse({"mqtt": {"max_packet_bytes": 65536 + 1024}}, {}).mqtt.max_packet_bytes == 66560
    with pytest.raises(c.ConfigError, match=r"^mqtt.max_packet_bytes"):
        c.parse({"mqtt": {"max_packet_bytes": 300 * 1024}, "validation": {"max_payload_bytes": 300 * 1024}}, {})
