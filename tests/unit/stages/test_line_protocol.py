"""The line-protocol parser (pipeline/stages/line_protocol.py) against the InfluxDB line protocol reference.

Examples marked "reference" are the ones docs.influxdata.com/influxdb/v2/reference/syntax/line-protocol/ shows
(elements, data types, quotes, special characters, comments); the hostile ones are bounded in time.
"""
import time
import tracemalloc

import pytest

from pipeline.records import Invalid
from pipeline.stages.line_protocol import Line, parse_line, parse_payload


def test_reference_example_with_tags_string_field_and_timestamp():
    # reference: "Elements of line protocol"
    assert parse_line('myMeasurement,tag1=value1,tag2=value2 fieldKey="fieldValue" 1556813561098000000') == Line(
        "myMeasurement", {"tag1": "value1", "tag2": "value2"}, {"fieldKey": "fieldValue"}, 1556813561098000000)


def test_reference_special_characters():
    # reference: "Special characters" examples
    assert parse_line(r'my\ Measurement fieldKey="string value"').measurement == "my Measurement"
    assert parse_line(r'myMeasurement fieldKey="\"string\" within a string"').fields == {
        "fieldKey": '"string" within a string'}
    assert parse_line(r"myMeasurement,tag\ Key1=tag\ Value1,tag\ Key2=tag\ Value2 fieldKey=100").tags == {
        "tag Key1": "tag Value1", "tag Key2": "tag Value2"}
    emoji = parse_line('myMeasurement,tagKey=🍭 fieldKey="Launch 🚀" 1556813561098000000')
    assert emoji.tags == {"tagKey": "🍭"} and emoji.fields == {"fieldKey": "Launch 🚀"}


def test_escaped_commas_and_equals_in_keys_and_values():
    line = parse_line(r"cpu\,x,ta\=g=v\,1\ 2 fi\,e\=ld\ 1=1i")
    assert line.measurement == "cpu,x"
    assert line.tags == {"ta=g": "v,1 2"}
    assert line.fields == {"fi,e=ld 1": 1}
    # An equals sign needs no escape in a measurement; inside a string field commas, spaces and '=' are text.
    assert parse_line('a=b f="x, y=z"') == Line("a=b", {}, {"f": "x, y=z"}, None)


def test_backslashes_per_the_reference_table():
    # reference: "Escaping backslashes": \ -> \, \\ -> \, \\\ -> \\, \\\\ -> \\ ; any other escaped char is literal
    assert parse_line(r"m,t=C:\temp f=1").tags == {"t": r"C:\temp"}
    assert parse_line(r"m,t=a\\b f=1").tags == {"t": r"a\b"}
    assert parse_line(r"m,t=a\\\b f=1").tags == {"t": r"a\\b"}
    assert parse_line(r"m,t=a\\\\b f=1").tags == {"t": r"a\\b"}
    assert parse_line(r'm f="a\\b"').fields == {"f": r"a\b"}
    assert parse_line(r'm f="ends with \\"').fields == {"f": "ends with \\"}


def test_data_types():
    # reference: "Data types and format": floats 1, 1.0, 1.e+78, 1.E+78; integers 1i; uintegers 1u; booleans
    fields = parse_line("m a=1,b=1.0,c=1.e+78,d=1.E+78,e=-1.5e-3,f=.5,g=12i,h=-12i,i=7u,j=t,k=T,l=true,n=True,"
                        "o=TRUE,p=f,q=F,r=false,s=False,u=FALSE").fields
    assert fields == {"a": 1.0, "b": 1.0, "c": 1e78, "d": 1e78, "e": -1.5e-3, "f": 0.5, "g": 12, "h": -12, "i": 7,
                      "j": True, "k": True, "l": True, "n": True, "o": True, "p": False, "q": False, "r": False,
                      "s": False, "u": False}
    assert type(fields["a"]) is float and type(fields["g"]) is int
    assert parse_line("m i=-9223372036854775808i,u=18446744073709551615u").fields == {
        "i": -(1 << 63), "u": (1 << 64) - 1}


def test_timestamp_optional_and_signed():
    assert parse_line("m f=1").time_ns is None
    assert parse_line("m f=1 -5").time_ns == -5
    assert parse_line("m f=1 1700000000000000000\r").time_ns == 1700000000000000000


def test_comments_and_blank_lines_are_not_points():
    # reference: "Comments": '#' at the start of a line
    assert parse_line("# This is a comment") is None
    assert parse_line("") is None and parse_line("   ") is None
    points = parse_payload(b"# comment\n\nm f=1 1\n  \r\nm f=2 2\n", 100)
    assert [p.fields["f"] for p in points] == [1.0, 2.0]


@pytest.mark.parametrize("line, what", [
    ("m", "space before the fields"),
    ("m ", "field is not key=value"),
    ("m f=", "without a value"),
    ("m f", "field is not key=value"),
    ("m =1", "field is not key=value"),
    ("m f=1,", "field is not key=value"),
    ("m,t= f=1", "tag is not key=value"),
    ("m,=v f=1", "tag is not key=value"),
    ("m, f=1", "tag is not key=value"),
    (",t=1 f=1", "missing measurement"),
    ("m f=nan", "not a float"),
    ("m f=Inf", "not a float"),
    ("m f=1e999", "beyond a double"),
    ("m f=+1", "not a float"),
    ("m f=1x", "not a float"),
    ("m f=9223372036854775808i", "beyond 64 bits"),
    ("m f=18446744073709551616u", "beyond 64 bits"),
    ("m f=-1u", "not a float"),
    ('m f="open', "closing quote"),
    ('m f="a\\"', "closing quote"),
    ("m f=1 x", "unexpected text"),
    ("m f=1 1.5", "unexpected text"),
    ("m f=1 1 2", "unexpected text"),
    ("m f=1 99999999999999999999", "timestamp beyond 64 bits"),
    ("m f='single'", "not a float"),
])
def test_invalid_lines_are_refused_naming_what(line, what):
    with pytest.raises(Invalid) as err:
        parse_line(line)
    assert err.value.reason == "line_protocol_invalid"
    assert what in err.value.detail


def test_payload_errors_name_the_line():
    with pytest.raises(Invalid) as err:
        parse_payload(b"m f=1\n# ok\nm f=oops\n", 100)
    assert err.value.reason == "line_protocol_invalid" and err.value.detail.startswith("line 3:")
    with pytest.raises(Invalid) as err:
        parse_payload(b"m f=1\nm,t=\xff f=1\n", 100)
    assert err.value.reason == "invalid_utf8" and err.value.detail.startswith("line 2:")
    with pytest.raises(Invalid) as err:
        parse_payload(b"# nothing\n\n", 100)
    assert err.value.reason == "line_protocol_invalid"


def _bounded(payload: bytes, max_readings: int = 100) -> Invalid:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(Invalid) as err:
            parse_payload(payload, max_readings)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 20 * len(payload) + 1_000_000
    return err.value


def test_ten_thousand_fields_in_one_line_refused_early():
    payload = b"m " + b",".join(b"f%d=%d" % (i, i) for i in range(10_000))
    err = _bounded(payload)
    assert err.reason == "too_many_readings" and "line 1" in err.detail


def test_ten_thousand_lines_refused_early():
    err = _bounded(b"\n".join(b"m f=%d %d" % (i, i) for i in range(10_000)))
    assert err.reason == "too_many_readings" and "line 101" in err.detail


@pytest.mark.timeout(30)
def test_hostile_lines_in_bounded_time():
    for payload in (b"m f=" + b"9" * 60_000 + b"i", b"m f=1 " + b"9" * 60_000, b'm f="' + b"\\" * 60_001,
                    b"m" + b"\\ " * 30_000, b"m," + b"t=v," * 15_000, b"\xff" * 60_000, b"m f=" + b"1" * 60_000 + b"x"):
        assert _bounded(payload).reason in {"line_protocol_invalid", "invalid_utf8"}


def test_repeated_field_keys_count_against_the_limit_and_the_last_value_wins():
    assert parse_line("m a=1,a=2").fields == {"a": 2.0}
    err = _bounded(b"m " + b",".join([b"a=1"] * 10_000))
    assert err.reason == "too_many_readings"


def test_a_payload_of_newlines_is_refused_in_bounded_memory():
    assert _bounded(b"\n" * 60_000).reason == "line_protocol_invalid"
