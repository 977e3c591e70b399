"""Property: Partials (the current step's readings kept apart, folded into the longer periods when the step moves on)
shows what the per-reading reference (tests/reference/partials.py) shows, for random period sets (nested or not,
with or without a period as long as the step), readings moving forward in event time with late and out-of-order
ones and duplicates among them, seeds at any point, and idle series evicted."""
from __future__ import annotations

import math

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.operators.windows.partials import Partials
from pipeline.operators.windows.tracker import Window, WindowTracker
from tests.reference.partials import ReferencePartials

US = 1_000_000
T0 = 1_765_000_000 * US
SERIES = [("a", "t"), ("a", "h"), ("b", "t")]
period_sets = st.sampled_from([["1m", "5m", "1h", "1d"], ["1m", "90s"], ["90s", "1m", "1h"], ["10s", "1m"],
                               ["7s", "1h"], ["1m"], ["60s", "1m", "5m"], ["5m", "1m"]])
whole = st.integers(-1000, 1000).map(float)  # sums of these are exact: the outputs must be equal to the bit
values = st.one_of(whole, st.sampled_from([0.5, -0.0, 1e-300]), st.floats(-1e12, 1e12, allow_nan=False))
# Event time moves on from one reading to the next by a few seconds mostly; now and then it steps back (a late
# or out-of-order reading) or stands still (a duplicate).
moves = st.one_of(st.integers(0, 20 * US), st.integers(0, 3).map(lambda s: s * US), st.integers(-400 * US, 0))
readings = st.lists(st.tuples(st.sampled_from(SERIES), moves, values), min_size=1, max_size=12)
seeds = st.tuples(st.sampled_from(SERIES), st.integers(0, 3), st.integers(-2, 1), st.integers(1, 5), whole, whole)
operations = st.lists(st.one_of(readings.map(lambda r: ("add", r)), seeds.map(lambda s: ("seed", s)),
                                st.integers(0, 30).map(lambda s: ("evict", s))), max_size=25)


def shown(p: Partials, series) -> dict:
    """Every field of the series' partials, decoded from what `encode` formats of their copies."""
    out = {}
    for sensor_id in {s for s, _m in series}:
        enc = p.encode(p.copies(sensor_id, [m for s, m in series if s == sensor_id] + ["absent"]))
        out.update({(sensor_id, k): orjson.loads(v) for k, v in zip(enc[::2], enc[1::2])})
    return out


def reference_shows(ref: ReferencePartials, series) -> dict:
    """The same fields, as the reference computes them."""
    out = {}
    for sensor_id in {s for s, _m in series}:
        fields = ref.fields(sensor_id, [m for s, m in series if s == sensor_id] + ["absent"])
        out.update({(sensor_id, k): v for k, v in fields.items()})
    return out


def assert_same(got: dict, want: dict, magnitude: float) -> None:
    assert got.keys() == want.keys()
    for key, w in want.items():
        g = got[key]
        assert {k: v for k, v in g.items() if k != "avg"} == {k: v for k, v in w.items() if k != "avg"}, key
        # Only the order of summation differs: of whole numbers the sums are exact.
        assert math.isclose(g["avg"], w["avg"], rel_tol=1e-12, abs_tol=1e-12 * magnitude), (key, g, w)


@settings(max_examples=400, deadline=None)
@given(periods=period_sets, ops=operations)
def test_partials_show_what_the_per_reading_reference_shows(periods, ops):
    tracker = WindowTracker(periods, grace_s=10, idle_close_s=60)
    p, ref = Partials(tracker), ReferencePartials(tracker.sizes)
    ts, now, magnitude, exact = T0, 0.0, 1.0, True
    for kind, op in ops:
        now += 1.0
        if kind == "add":
            rows = []
            for (sensor_id, metric), move, value in op:
                ts += move
                rows.append((sensor_id, metric, value, ts))
                ref.add(sensor_id, metric, ts, value, now)
                magnitude, exact = max(magnitude, abs(value)), exact and value.is_integer()
            p.add_rows(rows, now)
        elif kind == "seed":
            (sensor_id, metric), n, windows_back, count, lo, hi = op
            period = periods[n % len(periods)]
            size = tracker.sizes[period]
            start = ts - ts % size + windows_back * size
            lo, hi = min(lo, hi), max(lo, hi)
            args = (sensor_id, metric, Window(period, start, start + size), count, (lo + hi) / 2 * count, lo, hi, now)
            p.seed(*args)
            ref.seed(*args)
            magnitude = max(magnitude, abs(lo), abs(hi))
        else:
            cutoff = now - op
            p.evict_idle(cutoff, set())
            ref.acc = {k: v for k, v in ref.acc.items() if v[0] >= cutoff}
        assert set(p.acc) == set(ref.acc)
        got, want = shown(p, SERIES), reference_shows(ref, SERIES)
        assert_same(got, want, magnitude)
        if exact:
            assert got == want


def test_a_reading_in_the_current_step_touches_the_step_slot_only():
    p = Partials(WindowTracker(["1m", "5m", "1h", "1d"], grace_s=10, idle_close_s=60))
    p.add_rows([("s", "t", 1.0, T0), ("s", "t", 2.0, T0 + 10 * US)], 5.0)
    fields = p.fields("s", ["t"])
    assert [f["count"] for f in fields.values()] == [2, 2, 2, 2]
    assert list(p.acc[("s", "t")][6:]) == [-math.inf, 0.0, 0.0, 0.0, 0.0] * 3  # 5m, 1h, 1d: nothing folded yet
