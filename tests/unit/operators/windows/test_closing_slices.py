"""Windows closed a slice of keys at a time: every key closes exactly once, in closing order (a shorter window
before the longer one ending with it), and the rows written equal a simple per-reading reference."""
from __future__ import annotations

import json

from hypothesis import given, settings, strategies as st
from prometheus_client import CollectorRegistry

from pipeline.config import RedisConfig, Secret, parse
from pipeline.observability.metrics import Metrics
from pipeline.operators.windows import aggregator as agg_mod, partials as partials_mod
from pipeline.operators.windows.aggregator import WindowAggregator
from pipeline.operators.windows.partials import Partials
from pipeline.operators.windows.tracker import US, WindowTracker

T0 = 1_760_000_400  # a multiple of 1 h
PERIODS = ["1m", "5m"]


def tracker_with(keys_by_window: dict) -> WindowTracker:
    tr = WindowTracker(PERIODS, grace_s=0, idle_close_s=1000)
    for (partition, window), keys in keys_by_window.items():
        for sensor_id, metric in keys:
            tr.add(partition, window, sensor_id, metric)
    return tr


series = st.tuples(st.sampled_from([f"s{i}" for i in range(12)]), st.sampled_from(["t", "h", "p"]))
readings = st.lists(st.tuples(series, st.integers(0, 2), st.integers(0, 599), st.floats(-1e6, 1e6)), min_size=1,
                    max_size=120)


@settings(max_examples=60, deadline=None)
@given(readings, st.integers(1, 40))
def test_slices_close_every_pending_key_once_in_closing_order(rows, limit):
    tr = WindowTracker(PERIODS, grace_s=0, idle_close_s=1000)
    expected = set()
    for (sensor_id, metric), partition, offset_s, _value in rows:
        for w in tr.windows((T0 + offset_s) * US):
            tr.add(partition, w, sensor_id, metric)
            expected.add((partition, w, sensor_id, metric))
    tr.observe(0, (T0 + 3600) * US, 0.0)
    tr.observe(1, (T0 + 3600) * US, 0.0)
    tr.observe(2, (T0 + 3600) * US, 0.0)
    closed: list = []
    while True:
        due = tr.due(0.0, limit)
        if not due:
            break
        assert sum(len(d.keys) for d in due) <= limit
        for d in due:
            assert d.left == len(tr.pending[(d.partition, d.window)]) - len(d.keys)
            closed.extend((d.partition, d.window, *k) for k in d.keys)
            tr.remove(d)
    assert len(closed) == len(set(closed)) and set(closed) == expected
    # A window is closed only once every window ending earlier, or ending with it and shorter, is closed.
    order = {}
    for i, (partition, w, *_k) in enumerate(closed):
        order.setdefault((partition, w), []).append(i)
    for a, ia in order.items():
        for b, ib in order.items():
            if (a[1].end, -a[1].start) < (b[1].end, -b[1].start):
                assert max(ia) < min(ib), (a, b)


def test_a_window_larger_than_the_limit_is_closed_in_slices_in_the_order_keys_became_pending():
    tr = WindowTracker(["1m"], grace_s=0, idle_close_s=1000)
    w = tr.windows(T0 * US)[0]
    for i in range(10):
        tr.add(0, w, f"s{i}", "t")
    tr.observe(0, (T0 + 120) * US, 0.0)
    [first] = tr.due(0.0, 4)
    assert first.keys == {(f"s{i}", "t") for i in range(4)} and first.left == 6
    tr.remove(first)
    assert [len(d.keys) for d in tr.due(0.0)] == [6] and tr.due(0.0)[0].left == 0


class FakeStore:
    """The window store without PostgreSQL: each closing computes its rows from the readings given, like the
    statements do (from the readings, or a longer period from the shorter period's rows)."""

    def __init__(self, readings: list):
        self.readings = readings  # (sensor_id, metric, ts_us, value)
        self.rows: dict = {}
        self.transactions = 0

    def publish_partials(self, fields, now):
        list(fields)

    def close(self, statements):
        self.transactions += 1
        out = []  # (window, rows it closed), as WindowStore.close returns
        for window, _sql, params in statements:
            out.append((window, len(params["sensors"])))
            for sensor_id, metric in zip(params["sensors"], params["metrics"]):
                values = [v for s, m, ts, v in self.readings if s == sensor_id and m == metric
                          and window.start <= ts < window.end]
                key = (sensor_id, metric, window.period, window.start)
                assert key not in self.rows, f"closed twice: {key}"
                self.rows[key] = (len(values), min(values), max(values))
        return out


def reference(readings: list, periods: dict) -> dict:
    rows: dict = {}
    for sensor_id, metric, ts, value in readings:
        for period, size in periods.items():
            key = (sensor_id, metric, period, ts - ts % size)
            n, lo, hi = rows.get(key, (0, value, value))
            rows[key] = (n + 1, min(lo, value), max(hi, value))
    return rows


def test_the_aggregator_closes_a_large_minute_over_several_calls_with_the_rows_of_one(monkeypatch):
    monkeypatch.setattr(agg_mod, "CLOSE_SLICE", 100)
    monkeypatch.setattr(agg_mod, "CLOSE_BUDGET_S", 0.0)  # one slice per call
    monkeypatch.setattr(agg_mod, "CLOSE_PAUSE", 0.0)  # and the next call closes the next
    now = [float(T0 + 1000)]
    cfg = parse({"aggregation": {"periods": ["1m", "5m"], "grace_s": 0, "idle_close_s": 30}}, {}).aggregation
    agg = WindowAggregator(cfg, RedisConfig(), Secret(""), Metrics(CollectorRegistry()), clock=lambda: now[0])
    readings = [(f"s{i:03d}", "t", (T0 + k * 20) * US, float(i + k)) for i in range(250) for k in range(3)]
    agg.store = FakeStore(readings)
    staged = [(0, w, s, m) for s, m, ts, _v in readings for w in agg.tracker.windows(ts)]
    inserted = [(s, m, v, ts) for s, m, ts, v in readings]
    for p, w, s, m in dict.fromkeys(staged):
        agg.tracker.add(p, w, s, m)
    agg.tracker.observe(0, inserted[-1][3], now[0])
    agg.tracker.observe(1, (T0 + 1000) * US, now[0] + 31)  # another partition still takes readings
    now[0] += 31  # partition 0 is idle: its windows close by the wall clock, on ticks
    calls = []
    while agg.tracker.pending_count():
        before = agg.tracker.pending_count()
        calls.append(agg.tick())
        assert before - agg.tracker.pending_count() <= 100
        assert len(calls) < 100
    assert set(calls[:-1]) == {agg_mod.AGAIN_S}  # the sink ticks again soon while windows are left
    assert agg.tick() is None  # nothing left: the usual interval
    assert agg.store.transactions == len(calls) == 5  # 250 keys of a 1m window, 250 of a 5m: 100 at a time
    assert agg.store.rows == reference(readings, agg.tracker.sizes)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(series, st.integers(0, 900), st.floats(-1e12, 1e12)), min_size=1, max_size=60))
def test_encoded_partials_are_the_json_of_fields(rows):
    p = Partials(WindowTracker(["1m", "5m", "1h"], 10, 30))
    for (sensor_id, metric), offset_s, value in rows:
        p.add(sensor_id, metric, (T0 + offset_s) * US, value, 0.0)
    for sensor_id in {s for (s, _m), *_ in rows}:
        metrics = ["t", "h", "p", "absent"]
        enc = p.encoded(sensor_id, metrics)
        assert {k: json.loads(v) for k, v in zip(enc[::2], enc[1::2])} == p.fields(sensor_id, metrics)


def test_the_cached_field_names_are_bounded_and_stay_exact_as_windows_roll_over(monkeypatch):
    monkeypatch.setattr(partials_mod, "CACHED_NAMES", 8)
    p = Partials(WindowTracker(["1m", "5m"], 10, 30))
    for minute in range(30):
        for m in range(12):
            p.add("s", f"m{m}", (T0 + 60 * minute) * US, float(minute), 0.0)
        enc = p.encoded("s", [f"m{m}" for m in range(12)])
        assert {k: json.loads(v) for k, v in zip(enc[::2], enc[1::2])} == p.fields("s", [f"m{m}" for m in range(12)])
        assert len(p._names) <= 8  # noqa: SLF001


def test_with_no_partition_taking_readings_whole_windows_close_in_one_call(monkeypatch):
    monkeypatch.setattr(agg_mod, "CLOSE_SLICE", 100)
    now = [float(T0 + 1000)]
    cfg = parse({"aggregation": {"periods": ["1m", "5m"], "grace_s": 0, "idle_close_s": 30}}, {}).aggregation
    agg = WindowAggregator(cfg, RedisConfig(), Secret(""), Metrics(CollectorRegistry()), clock=lambda: now[0])
    readings = [(f"s{i:03d}", "t", (T0 + 20) * US, float(i)) for i in range(250)]
    agg.store = FakeStore(readings)
    for s, m, ts, _v in readings:
        for w in agg.tracker.windows(ts):
            agg.tracker.add(0, w, s, m)
    agg.tracker.observe(0, (T0 + 20) * US, now[0])
    agg.tracker.observe(-1, (T0 + 20) * US, now[0] + 31)  # the daemon's own readings do not count
    now[0] += 31
    assert agg.tick() is None and agg.tracker.pending_count() == 0 and agg.store.transactions == 1
    assert agg.store.rows == reference(readings, agg.tracker.sizes)


def test_while_readings_flow_a_slice_is_followed_by_a_pause_of_the_readings(monkeypatch):
    monkeypatch.setattr(agg_mod, "CLOSE_SLICE", 100)
    monkeypatch.setattr(agg_mod, "CLOSE_BUDGET_S", 0.0)
    monkeypatch.setattr(agg_mod, "CLOSE_PAUSE", 1000.0)  # the pause outlasts the test
    now = [float(T0 + 1000)]
    cfg = parse({"aggregation": {"periods": ["1m"], "grace_s": 0, "idle_close_s": 30}}, {}).aggregation
    agg = WindowAggregator(cfg, RedisConfig(), Secret(""), Metrics(CollectorRegistry()), clock=lambda: now[0])
    readings = [(f"s{i:03d}", "t", (T0 + 20) * US, float(i)) for i in range(250)]
    agg.store = FakeStore(readings)
    for s, m, ts, _v in readings:
        agg.tracker.add(0, agg.tracker.windows(ts)[0], s, m)
    agg.tracker.observe(0, (T0 + 120) * US, now[0])  # the watermark passed the window; readings flow
    assert agg.close_due() is True and agg.tracker.pending_count() == 150  # one slice
    assert agg.close_due() is True and agg.tracker.pending_count() == 150  # paused: the readings' turn
    now[0] += 31  # the partition fell silent: nothing to let through, the rest closes at once
    assert agg.close_due() is False and agg.tracker.pending_count() == 0
