"""History files as the import reads them: batches with line numbers and byte offsets to resume from, CSV columns
by the header, a line too long refused in bounded memory, line protocol mapped to readings (through a stand-in
parser with the dialects' interface), and the live validation applied."""
import io
import sys
import types
from collections import namedtuple

import pytest

from pipeline.config import parse
from pipeline.records import Invalid, RawMessage
from pipeline.tools.import_files import (MAX_LINE_BYTES, Checker, csv_candidates, csv_columns, detect_format,
                                         lp_candidates, parse_batch, read_batches)

SOURCE = RawMessage("import:test", b"", 1_800_000_000.0)


def test_batches_carry_line_numbers_and_the_offset_to_resume_from():
    data = b"h\n# a comment\na\n\nb\nc\n"
    batches = list(read_batches(io.BytesIO(data), 2, 1, 2))  # after the header line
    assert [[n for n, _ in b.lines] for b in batches] == [[3, 5], [6]]
    first = batches[0]
    assert first.end_offset == data.index(b"b\n") + 2 and first.end_lineno == 5
    resumed = list(read_batches(io.BytesIO(data), first.end_offset, first.end_lineno, 10))
    assert [b.lines for b in resumed] == [[(6, "c")]]


def test_a_line_too_long_is_a_bad_line_and_reading_goes_on():
    data = b"a\n" + b"x" * (3 * MAX_LINE_BYTES) + b"\nb\n"
    (batch,) = list(read_batches(io.BytesIO(data), 0, 0, 10))
    assert batch.lines == [(1, "a"), (3, "b")] and [(b.lineno, b.reason) for b in batch.too_long] == [(2, "line_too_long")]
    assert batch.end_offset == len(data)


def test_csv_columns_by_the_header_in_any_order():
    assert detect_format("sensor_id,metric,value,timestamp") == "csv" and detect_format("weather,host=a t=1 1") == "lp"
    cols = csv_columns("timestamp,value,sensor_id,metric,unit")
    (c,) = csv_candidates("2026-12-01T10:00:00Z,21.5,s1,temperature,C", cols, SOURCE)
    assert (c.sensor_id, c.metric, c.value, c.timestamp, c.unit) == ("s1", "temperature", 21.5, "2026-12-01T10:00:00Z", "C")
    (q,) = csv_candidates('1700000000,"40",s2,humidity,', cols, SOURCE)  # quoted: the csv module reads it
    assert (q.sensor_id, q.value, q.timestamp, q.unit) == ("s2", 40.0, 1700000000.0, None)
    with pytest.raises(ValueError, match="lacks value"):
        csv_columns("sensor_id,metric,timestamp")
    with pytest.raises(Invalid, match="csv_columns"):
        csv_candidates("1,2,3", cols, SOURCE)


def test_every_line_through_the_live_validation_and_units():
    cfg = parse({"units": {"temperature": {"canonical": "C", "convert": [{"unit": "K", "offset": -273.15}]}}}, {})
    checker = Checker(cfg, allow_old=False, clock=lambda: 1_800_000_000.0)
    cols = csv_columns("sensor_id,metric,value,timestamp,unit")
    batch = next(read_batches(io.BytesIO(b"s1,temperature,300,1800000000,K\ns1,temperature,1,1000,\n"
                                         b"s1,temperature,inf,1800000000,\n"), 0, 1, 10))
    readings, bad = parse_batch(batch, "csv", cols, checker, SOURCE)
    assert [(r.value, r.unit) for r in readings] == [(300 - 273.15, "C")]
    assert [(b.lineno, b.reason) for b in bad] == [(3, "timestamp_too_old"), (4, "value_not_number")]  # as text, not a number
    old = Checker(cfg, allow_old=True, clock=lambda: 1_800_000_000.0)
    assert len(parse_batch(batch, "csv", cols, old, SOURCE)[0]) == 2
    known_only = parse({"limits": {"registration": "known"}}, {})
    strict = Checker(known_only, allow_old=True, clock=lambda: 1_800_000_000.0, registered={"s2"})
    assert {b.reason for b in parse_batch(batch, "csv", cols, strict, SOURCE)[1]} == {"unknown_sensor", "value_not_number"}


Line = namedtuple("Line", "measurement tags fields time_ns")


@pytest.fixture
def line_protocol(monkeypatch):
    """A stand-in with the interface of pipeline/stages/line_protocol.py: parse_line(line) -> Line, raising Invalid."""
    module = types.ModuleType("pipeline.stages.line_protocol")

    class Invalid(Exception):
        pass

    def parse_line(text, max_fields=None):
        if text == "broken":
            raise Invalid("missing fields")
        return eval(text)  # noqa: S307 - the test's own literals

    module.Invalid, module.parse_line = Invalid, parse_line
    monkeypatch.setitem(sys.modules, "pipeline.stages.line_protocol", module)
    import pipeline.stages
    monkeypatch.setattr(pipeline.stages, "line_protocol", module, raising=False)
    return module


def test_line_protocol_points_become_readings(line_protocol):
    cands = lp_candidates(repr(Line("weather", {"sensor_id": "st-1", "unit": "C"},
                                    {"Temperature": 21.5, "ok": True, "note": "x", "value": 3}, 1_700_000_000 * 10**9)),
                          SOURCE)
    assert [(c.sensor_id, c.metric, c.value, c.timestamp, c.unit) for c in cands] == [
        ("st-1", "temperature", 21.5, 1_700_000_000.0, "C"), ("st-1", "weather", 3, 1_700_000_000.0, "C")]
    (c,) = lp_candidates(repr(Line("boiler", {}, {"pressure": 2}, 10**18)), SOURCE)
    assert (c.sensor_id, c.metric) == ("boiler", "pressure")  # no sensor tag: the measurement names the sensor
    with pytest.raises(Invalid, match="line_protocol_invalid"):
        lp_candidates("broken", SOURCE)
    with pytest.raises(Invalid, match="timestamp_missing"):
        lp_candidates(repr(Line("boiler", {}, {"pressure": 2}, None)), SOURCE)
    with pytest.raises(Invalid, match="no_numeric_field"):
        lp_candidates(repr(Line("boiler", {}, {"state": "on"}, 10**18)), SOURCE)
