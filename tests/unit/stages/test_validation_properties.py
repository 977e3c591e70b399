"""Property: whatever arrives, decode and validate either produce readings or raise their own Invalid."""
import json
import math
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.records import Invalid, RawMessage, Reading
from pipeline.stages.decode import Decode, keys_written
from pipeline.stages.validate import Validate
from tests.unit.helpers import NOW

DECODE = Decode(max_payload_bytes=65536, max_readings=100)
VALIDATE = Validate(300, 30 * 86400, "sensor", None, clock=lambda: NOW)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12)
field_names = st.sampled_from(["type", "location", "timestamp", "readings", "metric", "value", "unit", "seq", "other"])
envelopes = st.dictionaries(field_names, json_values | st.dictionaries(st.text(max_size=25), json_values, max_size=5), max_size=6)
topics = st.builds(lambda parts: "/".join(parts), st.lists(st.text(max_size=60), min_size=1, max_size=5))


def check(topic: str, payload: bytes) -> None:
    try:
        candidates = DECODE.process(RawMessage(topic, payload, NOW))
    except Invalid as err:
        assert err.reason and err.reason.isidentifier()
        return
    for c in candidates:
        try:
            [reading] = VALIDATE.process(c)
        except Invalid as err:
            assert err.reason and err.reason.isidentifier()
            continue
        assert isinstance(reading, Reading)
        assert isinstance(reading.value, float) and math.isfinite(reading.value)
        assert 0 < len(reading.sensor_id) <= 50 and 0 < len(reading.metric) <= 20
        assert NOW - 30 * 86400 <= reading.ts <= NOW + 300


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(topics, st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_invalid(topic, payload):
    check(topic, payload)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(topics, envelopes)
def test_arbitrary_json_objects_never_raise_anything_but_invalid(topic, obj):
    check(topic, json.dumps(obj, allow_nan=True).encode())


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60), st.floats(allow_nan=True, allow_infinity=True) | st.integers(min_value=-10**400, max_value=10**400))
def test_per_metric_topics_with_any_number_text(metric, number):
    check(f"sensors/dev-1/{metric}", repr(number).encode())


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-10**400, max_value=10**400) | st.floats(allow_nan=True, allow_infinity=True) | json_values)
def test_any_python_value_as_timestamp_or_value(raw):
    """The stages may also meet values no JSON parser of ours produces (huge ints): still only Invalid."""
    from pipeline.stages.decode import Candidate

    for candidate in (Candidate("dev-1", "temperature", raw, None, None, None, None, RawMessage("s/dev-1", b"{}", NOW)),
                      Candidate("dev-1", "temperature", 1.0, raw, None, None, None, RawMessage("s/dev-1", b"{}", NOW))):
        try:
            [reading] = VALIDATE.process(candidate)
        except Invalid as err:
            assert err.reason and err.reason.isidentifier()
            continue
        assert isinstance(reading.value, float) and math.isfinite(reading.value)
        assert NOW - 30 * 86400 <= reading.ts <= NOW + 300


KEY_PATTERN = re.compile(rb'"\s*:')  # what decode.keys_written counts, as a regex


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b'"', b":", b" ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c", b"\x1c", b"a", b"{", b"\\"]),
                max_size=40).map(b"".join))
def test_keys_written_counts_what_the_key_pattern_matches(payload):
    assert keys_written(payload) == len(KEY_PATTERN.findall(payload))
