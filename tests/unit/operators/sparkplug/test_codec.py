"""The sparkplug format's decoder: the namespace's topics, payload parsing, hostile payloads refused in bounded
time with a named reason."""
import time

import pytest

from pipeline.operators.sparkplug.codec import SparkplugMessage
from pipeline.records import Invalid
from tests.unit.operators.sparkplug.spb import dbirth, message, nbirth


def test_a_device_message_carries_its_device_and_the_parsed_payload():
    (m,) = message("spBv1.0/G/DBIRTH/E/D1", dbirth(seq=1), 5)
    assert isinstance(m, SparkplugMessage)
    assert (m.group_id, m.message_type, m.edge_node_id, m.device_id) == ("G", "DBIRTH", "E", "D1")
    assert m.payload.seq == 1 and len(m.payload.metrics) == 3


def test_commands_are_taken_and_not_stored():
    assert message("spBv1.0/G/NCMD/E", nbirth(), 1) == []


@pytest.mark.parametrize("topic", ["spBv1.0/G/DDATA/E", "spBv1.0/G/NDATA/E/D", "spBv1.0/G/XDATA/E",
                                   "spBv1.0/G/DDATA/E/D/extra"])
def test_topics_outside_the_namespace_shape_are_refused(topic):
    with pytest.raises(Invalid) as err:
        message(topic, nbirth(), 1)
    assert err.value.reason == "sparkplug_bad_topic"


HOSTILE = {
    "truncated": nbirth()[:-3],
    "huge_declared_length": b"\x12\xff\xff\xff\xff\x0f" + b"\x00" * 16,  # metrics: a 4 GB length, 16 bytes given
    "wrong_wire_type": b"\x0b\x0c\x0d",
}


def _field(number: int, body: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    key, size, n = (number << 3) | 2, b"", len(body)
    while True:
        size += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
        n >>= 7
        if not n:
            break
    return _varint(key) + size + body


def _varint(n: int) -> bytes:
    out = b""
    while True:
        out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
        n >>= 7
        if not n:
            return out


def _deep(levels: int) -> bytes:
    """Payload.metrics[0].template_value.metrics[0].template_value... `levels` deep (a well-formed message)."""
    metric = b""
    for _ in range(levels):
        metric = _field(18, _field(2, metric))  # Metric.template_value = Template{metrics: [metric]}
    return _field(2, metric)


# Templates nested in templates 5,000 deep: well-formed, past protobuf's recursion limit.
HOSTILE["deep_nesting"] = _deep(5000)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_payloads_are_refused_fast(name):
    started = time.perf_counter()
    with pytest.raises(Invalid) as err:
        message("spBv1.0/G/NBIRTH/E", HOSTILE[name], 1)
    assert err.value.reason == "sparkplug_invalid_payload"
    assert time.perf_counter() - started < 0.5
