"""CBOR and MessagePack payloads (pipeline/stages/binary.py): the JSON object shapes in binary, told from JSON by
their first byte on the json format's topics, hostile ones refused in bounded time and memory with a named reason.

CBOR vectors are RFC 8949 Appendix A's (hex as printed there); MessagePack bytes follow its spec's format table
(github.com/msgpack/msgpack/blob/master/spec.md: fixmap 0x80-0x8f, map16 0xde, map32 0xdf, array32 0xdd, ...).
"""
import time
import tracemalloc

import cbor2
import msgpack
import pytest

from pipeline.records import Invalid, RawMessage
from pipeline.registry import payloads
from pipeline.registry.formats import Limits
from pipeline.stages.binary import CBOR, JSON, MSGPACK, parse_cbor, parse_msgpack, sniff
from pipeline.stages.decode import Decode

DECODE = Decode(65536, 100)


def decode(payload: bytes, topic: str = "sensors/s1") -> list:
    return DECODE.process(RawMessage(topic, payload, 1_700_000_000.0))


# RFC 8949 Appendix A: (diagnostic notation, hex) pairs whose value is one JSON has.
RFC8949_VECTORS = [
    (0, "00"), (23, "17"), (24, "1818"), (1000000, "1a000f4240"), (18446744073709551615, "1bffffffffffffffff"),
    (18446744073709551616, "c249010000000000000000"), (-1, "20"), (-1000, "3903e7"), (1.1, "fb3ff199999999999a"),
    (1.5, "f93e00"), (100000.0, "fa47c35000"), (-4.1, "fbc010666666666666"), (False, "f4"), (True, "f5"),
    (None, "f6"), ("", "60"), ("IETF", "6449455446"), ('"\\', "62225c"), ("\u00fc", "62c3bc"),
    ([1, [2, 3], [4, 5]], "8301820203820405"), ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
    (["a", {"b": "c"}], "826161a161626163"), ({"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"},
                                              "a56161614161626142616361436164614461656145"),
    ([1, [2, 3], [4, 5]], "9f018202039f0405ffff"), ({"a": 1, "b": [2, 3]}, "bf61610161629f0203ffff"),
    ({"Fun": True, "Amt": -2}, "bf6346756ef563416d7421ff"),
]


@pytest.mark.parametrize("value, hexed", RFC8949_VECTORS)
def test_rfc8949_appendix_a_vectors(value, hexed):
    assert parse_cbor(bytes.fromhex(hexed.replace(" ", ""))) == value


def test_cbor_dates_bignum_and_decimal_become_json_values():
    # RFC 8949 Appendix A: 0("2013-03-21T20:04:00Z"), 1(1363896240), 1(1363896240.5); §3.4.4 decimal fraction 273.15
    assert parse_cbor(bytes.fromhex("c074323031332d30332d32315432303a30343a30305a")) == "2013-03-21T20:04:00+00:00"
    assert parse_cbor(bytes.fromhex("c11a514b67b0")) == "2013-03-21T20:04:00+00:00"
    assert parse_cbor(bytes.fromhex("c1fb41d452d9ec200000")) == "2013-03-21T20:04:00.500000+00:00"
    assert parse_cbor(bytes.fromhex("c48221196ab3")) == 273.15
    # self-described CBOR (tag 55799, §3.4.6) is a marker: the map under it is an ordinary map
    assert parse_cbor(bytes.fromhex("d9d9f7") + cbor2.dumps({"a": [1, {"b": 2}]})) == {"a": [1, {"b": 2}]}


@pytest.mark.parametrize("hexed, what", [
    ("4401020304", "bytes"),                 # h'01020304'
    ("d74401020304", "CBOR tag 23"),         # 23(h'01020304'), expected conversion to base16
    ("d818456449455446", "CBOR tag 24"),     # 24(h'6449455446'), encoded CBOR data item
    ("f7", "Undefined"),                     # undefined
    ("f0", "CBORSimpleValue"),               # simple(16)
    ("a10102", "not int"),                   # {1: 2}
    ("a14161 01", "map key of type bytes"),  # {h'61': 1}
])
def test_cbor_binary_only_types_refused_naming_them(hexed, what):
    with pytest.raises(Invalid) as err:
        parse_cbor(bytes.fromhex(hexed.replace(" ", "")))
    assert err.value.reason == "cbor_unsupported_type"
    assert what.lower() in str(err.value).lower()


def test_msgpack_shapes_and_types():
    assert parse_msgpack(msgpack.packb({"readings": {"t": 21.5, "n": 3, "ok": True, "none": None}})) == {
        "readings": {"t": 21.5, "n": 3, "ok": True, "none": None}}
    # timestamp extension (type -1, spec "Timestamp extension type") -> epoch seconds
    ts = msgpack.packb({"timestamp": msgpack.Timestamp(1700000000, 500_000_000)})
    assert parse_msgpack(ts) == {"timestamp": 1700000000.5}
    for body, what in ((msgpack.packb({"t": b"\x01"}), "bytes"), (msgpack.packb({"t": msgpack.ExtType(5, b"x")}),
                       "extension type 5"), (b"\x81\x01\x02", "int")):
        with pytest.raises(Invalid) as err:
            parse_msgpack(body)
        assert err.value.reason == "msgpack_unsupported_type" and what in err.value.detail


def test_first_byte_tells_the_encodings_apart():
    assert sniff(b'{"a": 1}') == sniff(b' \n{"a":1}') == sniff(b"[1]") == JSON
    assert all(sniff(bytes([b])) == CBOR for b in range(0xa0, 0xc0))
    assert all(sniff(bytes([b])) == MSGPACK for b in [*range(0x80, 0x90), 0xde, 0xdf])
    assert sniff(bytes.fromhex("d9d9f7a0")) == CBOR
    # what is neither map goes to the JSON parser (a UTF-8 BOM, msgpack's array, CBOR's array): refused there
    assert sniff(b"\xef\xbb\xbf{}") == sniff(b"\x91\x01") == JSON


def test_decode_reads_cbor_and_msgpack_like_json():
    body = {"type": "bme280", "location": "lab", "timestamp": 1_700_000_000, "readings": {"temperature": 21.5,
                                                                                        "humidity": 40}}
    want = [(c.metric, c.value, c.timestamp, c.sensor_type, c.location) for c in decode(orjson_dumps(body))]
    for payload in (cbor2.dumps(body), msgpack.packb(body)):
        got = decode(payload)
        assert [(c.metric, c.value, c.timestamp, c.sensor_type, c.location) for c in got] == want
        assert {c.sensor_id for c in got} == {"s1"}
    single = decode(cbor2.dumps({"metric": "temperature", "value": 20.5, "unit": "C"}))
    assert [(c.metric, c.value, c.unit) for c in single] == [("temperature", 20.5, "C")]
    # the same envelope rules as JSON: an unknown field is refused by name
    with pytest.raises(Invalid) as err:
        decode(msgpack.packb({"metric": "t", "value": 1, "temprature": 2}))
    assert err.value.reason == "unknown_field"


def orjson_dumps(obj) -> bytes:
    import orjson
    return orjson.dumps(obj)


def test_encodings_registered_by_name():
    limits = Limits(100, 32)
    assert payloads.get("cbor").parse(cbor2.dumps({"a": 1}), limits) == {"a": 1}
    assert payloads.get("msgpack").parse(msgpack.packb({"a": [1]}), limits) == {"a": [1]}
    assert payloads.get("text").parse(b" 21.5\n", limits) == 21.5
    assert payloads.get("text").parse(b"ON", limits) is True and payloads.get("text").parse(b"false", limits) is False
    assert payloads.get("text").parse(b"open", limits) == "open"
    with pytest.raises(Invalid) as err:
        payloads.get("text").parse(b"\xff", limits)
    assert err.value.reason == "invalid_utf8"


def _deep_cbor(n):
    return b"\x81" * n + b"\x01"


HOSTILE = [
    # (name, payload, reasons accepted)
    ("cbor truncated map", b"\xa2\x61a\x01", {"cbor_invalid"}),
    ("cbor truncated float", b"\xa1\x61t\xfb\x40\x35", {"cbor_invalid"}),
    ("cbor huge byte string", b"\xa1\x61t\x5b\xff\xff\xff\xff\xff\xff\xff\xff", {"cbor_invalid"}),
    ("cbor huge text string", b"\xa1\x61t\x7b\x00\x00\x00\x01\x00\x00\x00\x00", {"cbor_invalid"}),
    ("cbor huge array", b"\xa1\x61t\x9b\x00\x00\x00\x01\x00\x00\x00\x00", {"cbor_invalid"}),
    ("cbor huge map", b"\xbb\xff\xff\xff\xff\xff\xff\xff\xff", {"cbor_invalid"}),
    ("cbor deep arrays", b"\xa1\x61t" + _deep_cbor(100_000), {"cbor_too_deep"}),
    ("cbor deep tags", b"\xa1\x61t" + b"\xd8\x63" * 30_000 + b"\x01", {"cbor_too_deep"}),
    ("cbor indefinite never ends", b"\xbf" + b"\x61a\x01" * 10_000, {"cbor_invalid", "duplicate_key"}),
    ("cbor huge bignum", b"\xa1\x61t\xc2\x5b\x00\x00\x00\x01\x00\x00\x00\x00" + b"\xff" * 65535, {"cbor_invalid"}),
    ("cbor bad utf-8", b"\xa1\x61t\x62\xff\xfe", {"invalid_utf8"}),
    ("cbor duplicate key", b"\xa2\x61a\x01\x61a\x02", {"duplicate_key"}),
    ("cbor trailing bytes", cbor2.dumps({"metric": "t", "value": 1}) + b"\x00", {"cbor_invalid"}),
    ("cbor wrong type", cbor2.dumps({"metric": "t", "value": b"\x00"}), {"cbor_unsupported_type"}),
    ("cbor 10,000 readings", cbor2.dumps({"readings": {f"m{i}": i for i in range(10_000)}}), {"too_many_readings"}),
    ("msgpack truncated", b"\x82\xa1a\x01", {"msgpack_invalid"}),
    ("msgpack huge array", b"\x81\xa1t\xdd\xff\xff\xff\xff", {"msgpack_invalid"}),
    ("msgpack huge map", b"\xdf\xff\xff\xff\xff", {"too_many_readings"}),  # max_map_len, before building it
    ("msgpack huge str", b"\x81\xa1t\xdb\xff\xff\xff\xff", {"msgpack_invalid"}),
    ("msgpack huge bin", b"\x81\xa1t\xc6\xff\xff\xff\xff", {"msgpack_invalid"}),
    ("msgpack huge ext", b"\x81\xa1t\xc9\xff\xff\xff\xff\x05", {"msgpack_invalid"}),
    ("msgpack deep", b"\x81\xa1t" + b"\x91" * 100_000 + b"\x01", {"msgpack_too_deep"}),
    ("msgpack deep under limit of msgpack", b"\x81\xa1t" + b"\x91" * 500 + b"\x01", {"msgpack_too_deep"}),
    ("msgpack deep maps", b"\x81\xa1t" + b"\x81\xa1k" * 100_000 + b"\x01", {"msgpack_too_deep"}),
    ("msgpack bad utf-8", b"\x81\xa1t\xa2\xff\xfe", {"invalid_utf8"}),
    ("msgpack duplicate key", b"\x82\xa1a\x01\xa1a\x02", {"duplicate_key"}),
    ("msgpack trailing bytes", msgpack.packb({"metric": "t", "value": 1}) + b"\x00", {"msgpack_invalid"}),
    ("msgpack wrong type", msgpack.packb({"metric": "t", "value": msgpack.ExtType(1, b"")}),
     {"msgpack_unsupported_type"}),
    ("msgpack 10,000 readings", msgpack.packb({"readings": {f"m{i}": i for i in range(10_000)}}),
     {"too_many_readings"}),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name, payload, reasons", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_binary_refused_in_bounded_time_and_memory(name, payload, reasons):
    stage = Decode(900 * 1024, 100)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(Invalid) as err:
            stage.process(RawMessage("sensors/s1", payload, 1_700_000_000.0))
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.reason in reasons, str(err.value)
    assert elapsed < 1.0
    assert peak < 10 * len(payload) + 2_000_000, f"peak {peak} bytes for a {len(payload)}-byte payload"


def test_msgpack_encoding_alone_bounds_maps_by_the_payload_size():
    # the registered encoding (mappings) takes maps of any size the payload can hold; a declared size beyond it fails
    body = msgpack.packb({f"k{i}": i for i in range(1_000)})
    assert len(payloads.get("msgpack").parse(body, Limits(100, 32))) == 1_000
    with pytest.raises(Invalid) as err:
        payloads.get("msgpack").parse(b"\xdf\xff\xff\xff\xff", Limits(100, 32))
    assert err.value.reason == "msgpack_invalid"
