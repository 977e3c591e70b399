"""The fast PUBLISH parser: complete, incomplete and not-for-us packets, MQTT 3.1.1 and 5."""
import pytest

from pipeline.ingest.mqtt_client import split_publish


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish(topic: bytes, payload: bytes, qos: int = 1, mid: int = 7, props: bytes | None = None) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"")
    if props is not None:
        body += varint(len(props)) + props
    body += payload
    return bytes([0x30 | (qos << 1)]) + varint(len(body)) + body


def test_a_complete_qos1_publish_is_split_into_topic_payload_and_mid():
    packet = publish(b"sensors/s1", b'{"value": 1}', mid=0x1234)
    assert split_publish(packet, 0, v5=False) == (len(packet), b"sensors/s1", b'{"value": 1}', 1, 0x1234, False, False)


def test_packets_follow_each_other_in_one_buffer_and_qos0_has_no_mid():
    first, second = publish(b"a/b", b"x" * 300), publish(b"c", b"1.5", qos=0)  # 300 bytes: a two-byte length
    buf = b"junk" + first + second
    end, topic, payload, qos, mid, dup, retain = split_publish(buf, 4, v5=False)
    assert (topic, payload, qos, mid) == (b"a/b", b"x" * 300, 1, 7) and end == 4 + len(first)
    assert split_publish(buf, end, v5=False) == (len(buf), b"c", b"1.5", 0, 0, False, False)


@pytest.mark.parametrize("cut", range(0, 20))
def test_an_incomplete_publish_waits_for_more_bytes(cut):
    packet = publish(b"sensors/s1", b'{"value": 1}')
    assert split_publish(packet[:cut], 0, v5=False) is None


def test_mqtt5_properties_are_skipped():
    props = bytes([0x03]) + (4).to_bytes(2, "big") + b"text"  # content type "text"
    packet = publish(b"t/s1", b"21.5", props=props)
    assert split_publish(packet, 0, v5=True)[1:] == (b"t/s1", b"21.5", 1, 7, False, False)


@pytest.mark.parametrize("packet", [
    bytes([0x20, 2, 0, 0]),  # CONNACK
    bytes([0x90, 3, 0, 1, 1]),  # SUBACK
    bytes([0xD0, 0]),  # PINGRESP
    publish(b"t", b"1", qos=2),  # QoS 2: paho's PUBREC/PUBREL flow
    publish(b"", b"1", props=bytes([0x23, 0, 1])),  # an MQTT 5 topic alias: paho resolves it
    bytes([0x32, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),  # a remaining length longer than four bytes: malformed
    bytes([0x32, 5, 0, 9, 0x61, 0, 1]),  # the topic runs past the packet: malformed
])
def test_other_packets_are_left_to_paho(packet):
    assert split_publish(packet, 0, v5=True) is False


def test_the_dup_flag_of_a_resent_publish_is_reported():
    packet = bytearray(publish(b"sensors/s1", b"21.5", mid=9))
    packet[0] |= 0x08  # DUP: the broker sent this packet id before
    assert split_publish(bytes(packet), 0, v5=False)[-3:] == (9, True, False)


def test_the_retain_flag_of_a_stored_message_is_reported():
    packet = bytearray(publish(b"sensors/s1", b"21.5", mid=9))
    packet[0] |= 0x01  # RETAIN: the broker's stored copy, sent because of a new subscription
    assert split_publish(bytes(packet), 0, v5=False)[-3:] == (9, False, True)


def test_reads_linger_at_low_rates_and_keep_lingering_while_a_lingered_read_brings_few():
    from pipeline.ingest.mqtt_client import KEEP_LINGERING_BELOW, LINGER_BELOW, linger_next

    assert linger_next(False, 0) and linger_next(False, LINGER_BELOW - 1)  # a wake-up that found a message or two
    assert not linger_next(False, LINGER_BELOW)  # not lingering, and enough came: read again at once
    # About 15 messages in a 15 ms linger (1,000 msg/s): the next read lingers too, instead of one that finds one or two.
    assert linger_next(True, 15) and linger_next(True, KEEP_LINGERING_BELOW - 1)
    assert not linger_next(True, KEEP_LINGERING_BELOW)  # a high rate fills one lingered read: back to reading at once
