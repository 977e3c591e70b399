"""Property: the batch path (stages over whole batches, a message's shared fields checked once, COPY rows and
Redis entries built per message) stores exactly what the per-reading reference (tests/reference/per_reading.py)
stores: the same readings, COPY rows, stream entries, latest values and dead letters with their reasons, for
random batches of valid and invalid messages, 1-5 readings each, units and late readings; and a mapping's
candidates are judged in a batch as one at a time."""
from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.records import Invalid, RawMessage
from pipeline.runtime.stage import Refused
from pipeline.sinks import postgres, redis_stream, redis_wire
from pipeline.stages.decode import Candidate
from pipeline.stages.validate import Validate
from tests.reference import per_reading
from tests.unit.helpers import NOW, chain

UNITS = {"temperature": {"canonical": "C", "convert": [{"unit": "F", "scale": 0.5555555555555556,
                                                        "offset": -17.77777777777778},
                                                       {"unit": "K", "scale": 1.0, "offset": -273.15}]},
         "pressure": {"canonical": "hPa", "convert": [{"unit": "Pa", "scale": 0.01}, {"unit": "kPa", "scale": 10.0}]}}
TREE = {"units": UNITS, "limits": {"max_sensors": 4, "max_metrics_per_sensor": 3},
        "aggregation": {"grace_s": 10, "max_lateness_s": 100}}
HEAD = redis_wire.xadd_head("readings", 1000)

sensors = st.sampled_from(["dev-1", "dev-2", "dev-3", "a", "b:c", "app:x", "bad id", "dev-4", "dev-5"])
metrics = st.sampled_from(["temperature", "humidity", "pressure", "co2", "x" * 25, "9bad", "bme280_temperature"])
values = (st.floats(-1e6, 1e6) | st.integers(-10**6, 10**6) | st.sampled_from([True, "12", None, 10**400, 1.7e308])
          | st.floats(allow_nan=True, allow_infinity=True))
# Event times: in order, a little behind, past the lateness limit, malformed, in the future, or none.
offsets = st.sampled_from([0.0, 1.0, 2.5, -5.0, -50.0, -200.0, -5000.0])
timestamps = st.one_of(offsets.map(lambda d: NOW - 1000 + d), st.just(None), st.just("2025-10-09T08:30:00"),
                       st.just("yesterday"), st.just(NOW + 3600))
units = st.sampled_from([None, None, "C", "F", "K", "Pa", "kPa", "furlong"])
types = st.sampled_from([None, "sensor", "thermo", "broker", "bad type", ["x"], {"a": 1}])
locations = st.sampled_from([None, "hall", "roof"])


@st.composite
def message(draw, offset: int) -> RawMessage:
    """One message of the native JSON contract: readings map or single reading, or something refused whole."""
    sid = draw(sensors)
    kind = draw(st.sampled_from(["map", "map", "map", "single", "broken", "number"]))
    body: dict = {}
    ts, stype, loc, unit = draw(timestamps), draw(types), draw(locations), draw(units)
    for key, val in (("timestamp", ts), ("type", stype), ("location", loc), ("unit", unit)):
        if val is not None:
            body[key] = val
    if kind == "map":
        names = draw(st.lists(metrics, min_size=1, max_size=5, unique=True))
        body["readings"] = {m: draw(values) for m in names}
        payload = json.dumps(body, allow_nan=True).encode()
    elif kind == "single":
        body.update(metric=draw(metrics), value=draw(values))
        payload = json.dumps(body, allow_nan=True).encode()
    elif kind == "broken":
        payload = draw(st.sampled_from([b"{oops", b"[1, 2]", b'{"readings": {}}', b'{"temprature": 1}', b""]))
    else:
        payload = repr(draw(st.floats(-100, 100))).encode()
        return RawMessage(f"sensors/{sid}/{draw(metrics)}", payload, NOW, sid.encode(), "raw", offset % 3, offset)
    # Each message its own receive time object, as the MQTT bridge gives them.
    return RawMessage(f"sensors/{sid}", payload, NOW + offset * 0.0, sid.encode(), "raw", offset % 3, offset)


@st.composite
def batches(draw) -> tuple[list[RawMessage], int]:
    n = draw(st.integers(1, 25))
    return [draw(message(i)) for i in range(n)], draw(st.integers(0, n))


def letters(dead) -> list[tuple]:
    return [(d.source.offset, d.reason, d.stage, d.error, d.kind, d.metric, d.refused) for d in dead]


def fields(readings) -> list[tuple]:
    return [(r.sensor_id, r.sensor_type, r.location, r.metric, r.value, r.ts, r.received_at, r.source.offset, r.unit)
            for r in readings]


@settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(batches())
def test_batch_path_stores_what_the_per_reading_reference_stores(drawn):
    raws, split = drawn
    ch, _ = chain(TREE)
    out, dead = [], []
    for part in (raws[:split], raws[split:]):  # state (watermarks, known sensors) carried across batches
        if part:
            o, d = ch.run_batch(part)
            out += o
            dead += d
    decode = ch.stages[0]
    rules = {m: (u["canonical"], {c["unit"]: (c["scale"], c.get("offset", 0.0)) for c in u["convert"]})
             for m, u in UNITS.items()}
    ref = per_reading.Reference(NOW, rules, 10.0, 100.0, 4, 3)
    ref_out, ref_dead = ref.run(decode, raws)
    assert fields(out) == fields(ref_out)
    assert letters(dead) == letters(ref_dead)
    assert postgres.copy_rows(out) == per_reading.copy_rows(ref_out)
    assert redis_wire.xadd_entries(HEAD, out) == per_reading.xadd_entries(HEAD, ref_out)
    assert by_identity(redis_stream.latest_per_sensor(out)) == by_identity(per_reading.latest_per_sensor(out))


def by_identity(latest: dict) -> list:
    return [(sensor_id, [id(r) for r in readings]) for sensor_id, readings in latest.items()]


def test_a_message_of_many_readings_shares_its_fields_and_still_matches():
    """Three readings of one message: checked once as a message, stored as three rows and three entries."""
    raw = RawMessage("sensors/dev-1", json.dumps({"readings": {"temperature": 70.0, "humidity": 40.5, "co2": 400},
                                                 "timestamp": NOW - 10, "unit": "F"}).encode(), NOW, b"k", "raw", 0, 7)
    ch, _ = chain(TREE)
    out, dead = ch.run_batch([raw])
    assert dead == []
    assert [(r.metric, r.unit) for r in out] == [("temperature", "C"), ("humidity", "F"), ("co2", "F")]
    assert out[0].ts is out[1].ts is out[2].ts
    assert postgres.copy_rows(out) == per_reading.copy_rows(out)
    assert redis_wire.xadd_entries(HEAD, out) == per_reading.xadd_entries(HEAD, out)


class MappingCounts:
    """A mapping's counts (stages/mapping_stats.MappingStats) as validation reports refusals to them."""

    name = "m"

    def __init__(self):
        self.refused: list[tuple] = []

    def refused_reading(self, reason, detail, topic, payload):
        self.refused.append((reason, detail, topic))


@st.composite
def mapped_batches(draw) -> list[list]:
    """Messages as a mapping decodes them: per message one sensor id, time, type and location shared by its
    candidates, the unit per reading (a sibling unit field applies to some metrics only)."""
    messages = []
    for offset in range(draw(st.integers(1, 12))):
        sid, ts, stype, loc = draw(sensors), draw(timestamps), draw(types), draw(locations)
        raw = RawMessage(f"tele/{sid}/SENSOR", b"{}", NOW, sid.encode(), "raw", offset % 3, offset)
        names = draw(st.lists(metrics, min_size=1, max_size=4, unique=True))
        messages.append([(sid, m, draw(values), ts, stype, loc, draw(units), raw) for m in names])
    return messages


@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(mapped_batches())
def test_mapped_candidates_in_a_batch_are_judged_and_counted_as_one_at_a_time(messages):
    """A mapping's candidates take the batch path too: the same readings and refusals as `process` gives
    candidate by candidate, and the same refusals counted against the mapping."""
    results = []
    for batch in (True, False):
        counts = MappingCounts()
        candidates = [Candidate(*fields, counts) for message in messages for fields in message]
        validate = Validate(300.0, 30 * 86400.0, "sensor", None, clock=lambda: NOW)
        refused = Refused()
        if batch:
            out = validate.process_batch(candidates, refused)
        else:
            out = []
            for c in candidates:
                try:
                    out += validate.process(c)
                except Invalid as err:
                    refused.add(c, err)
        results.append((fields(out), [(c.source.offset, c.metric, err.reason, str(err)) for c, err in refused.entries],
                        counts.refused))
    assert results[0] == results[1]
