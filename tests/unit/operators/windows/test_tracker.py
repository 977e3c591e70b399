"""Window math, watermarks and closing, partials, and the late filter: in-order, out-of-order, late, too late."""
import pytest

from pipeline.records import Invalid, RawMessage, Reading
from pipeline.operators.windows.partials import Partials
from pipeline.operators.windows.tracker import US, Window, WindowTracker, from_us, parse_period, to_us
from pipeline.stages.lateness import LateFilter

T0 = 1_760_000_400  # a multiple of 1 h (so of 10 s and 1 min): window starts are easy to read
S = US  # one second in µs


def reading(ts: float, partition: int = 0, value: float = 1.0) -> Reading:
    src = RawMessage("t/s1", b"", ts, topic="raw", partition=partition, offset=0)
    return Reading("s1", "sensor", None, "temperature", value, ts, ts, src)


@pytest.mark.parametrize("label, seconds", [("10s", 10), ("1m", 60), ("5m", 300), ("1h", 3600), ("1d", 86400)])
def test_parse_period(label, seconds):
    assert parse_period(label) == seconds


@pytest.mark.parametrize("label", ["", "0s", "5", "m", "1w", "1.5m", " 1m"])
def test_parse_period_refuses_bad_labels(label):
    with pytest.raises(ValueError):
        parse_period(label)


def test_microsecond_conversion_round_trips():
    us = T0 * S + 123_456
    assert to_us(from_us(us)) == us


def test_windows_are_aligned_tumbling_and_end_exclusive():
    tr = WindowTracker(["10s", "1m"], grace_s=2, idle_close_s=30)
    assert tr.windows((T0 + 9) * S + 999_999) == [Window("10s", T0 * S, (T0 + 10) * S), Window("1m", T0 * S, (T0 + 60) * S)]
    assert tr.windows((T0 + 10) * S)[0] == Window("10s", (T0 + 10) * S, (T0 + 20) * S)


def close_all(tr: WindowTracker, now: float) -> list:
    due = tr.due(now)
    for d in due:
        tr.remove(d)
    return [(d.window.start // S - T0, sorted(d.keys)) for d in due]


def test_in_order_window_closes_when_watermark_passes_end_plus_grace():
    tr = WindowTracker(["10s"], grace_s=2, idle_close_s=1000)
    now = 0.0
    for t in (T0 + 1, T0 + 5, T0 + 9):
        w = tr.windows(t * S)[0]
        tr.add(0, w, "s1", "temperature")
        tr.observe(0, t * S, now)
    tr.observe(0, (T0 + 11) * S, now)  # watermark T0+9: not yet past the end (T0+10)
    assert close_all(tr, now) == []
    tr.observe(0, (T0 + 12) * S, now)  # watermark T0+10 == end: closes
    assert close_all(tr, now) == [(0, [("s1", "temperature")])]
    assert tr.pending == {}


def test_out_of_order_within_grace_lands_in_its_open_window():
    tr = WindowTracker(["10s"], grace_s=5, idle_close_s=1000)
    for t in (T0 + 8, T0 + 12, T0 + 3):  # T0+3 arrives after T0+12: its window is still open (watermark T0+7)
        w = tr.windows(t * S)[0]
        assert not tr.is_closed(0, w)
        tr.add(0, w, "s1", "temperature")
        tr.observe(0, t * S, 0.0)
    assert tr.watermark(0) == (T0 + 7) * S
    assert close_all(tr, 0.0) == []


def test_late_reading_reopens_a_closed_window_as_a_correction():
    tr = WindowTracker(["10s"], grace_s=1, idle_close_s=1000)
    w = tr.windows((T0 + 4) * S)[0]
    tr.add(0, w, "s1", "temperature")
    tr.observe(0, (T0 + 4) * S, 0.0)
    tr.observe(0, (T0 + 30) * S, 0.0)
    assert close_all(tr, 0.0) == [(0, [("s1", "temperature")])]
    late = tr.windows((T0 + 6) * S)[0]
    assert late == w and tr.is_closed(0, late) and not tr.is_pending(0, late, "s1", "temperature")
    tr.add(0, late, "s1", "temperature")
    assert close_all(tr, 0.0) == [(0, [("s1", "temperature")])]  # due at once: the row is recomputed


def test_watermarks_are_per_partition():
    tr = WindowTracker(["10s"], grace_s=0, idle_close_s=1000)
    w = tr.windows(T0 * S)[0]
    tr.add(1, w, "s2", "humidity")
    tr.observe(1, T0 * S, 0.0)
    tr.observe(0, (T0 + 100) * S, 0.0)  # another partition far ahead does not close partition 1's window
    assert close_all(tr, 0.0) == []


def test_idle_partition_closes_by_wall_clock_after_idle_timeout():
    tr = WindowTracker(["10s"], grace_s=2, idle_close_s=30)
    w = tr.windows((T0 + 1) * S)[0]
    tr.add(0, w, "s1", "temperature")
    tr.observe(0, (T0 + 1) * S, now=T0 + 1)
    assert close_all(tr, now=T0 + 25) == []  # past end + grace, but the partition is not idle for 30 s yet
    assert close_all(tr, now=T0 + 31) == [(0, [("s1", "temperature")])]


def test_windows_loaded_at_start_close_after_idle_timeout_without_any_reading():
    tr = WindowTracker(["10s"], grace_s=2, idle_close_s=5)
    tr.load(3, Window("10s", T0 * S, (T0 + 10) * S), "s1", "temperature", now=T0 + 100)
    assert tr.watermark(3) is None
    assert close_all(tr, now=T0 + 104) == []
    assert close_all(tr, now=T0 + 105) == [(0, [("s1", "temperature")])]


def test_remove_keeps_keys_added_after_the_close_was_planned():
    tr = WindowTracker(["10s"], grace_s=0, idle_close_s=1000)
    w = tr.windows(T0 * S)[0]
    tr.add(0, w, "s1", "temperature")
    tr.observe(0, (T0 + 20) * S, 0.0)
    [due] = tr.due(0.0)
    tr.add(0, w, "s2", "temperature")
    tr.remove(due)
    assert list(tr.pending) == [(0, w)] and set(tr.pending[(0, w)]) == {("s2", "temperature")}


def test_partials_follow_the_newest_window_only():
    tr = WindowTracker(["10s"], grace_s=0, idle_close_s=1000)
    p = Partials(tr)
    for t, v in ((T0 + 1, 20.0), (T0 + 2, 24.0), (T0 + 11, 30.0), (T0 + 3, 99.0), (T0 + 12, 10.0)):
        p.add("s1", "temperature", t * S, v)
    assert p.fields("s1", ["temperature"]) == {
        "temperature:10s": {"start": T0 + 10, "end": T0 + 20, "count": 2, "avg": 20.0, "min": 10.0, "max": 30.0}}


def test_partials_seeded_at_start_then_continued():
    tr = WindowTracker(["10s"], grace_s=0, idle_close_s=1000)
    p = Partials(tr)
    p.seed("s1", "temperature", Window("10s", T0 * S, (T0 + 10) * S), 2, 40.0, 18.0, 22.0)
    p.add("s1", "temperature", (T0 + 5) * S, 26.0)
    assert p.fields("s1", ["temperature"])["temperature:10s"] == {"start": T0, "end": T0 + 10, "count": 3,
                                                                  "avg": 22.0, "min": 18.0, "max": 26.0}


def test_late_filter_in_order_out_of_order_late_and_too_late():
    f = LateFilter(grace_s=10, max_lateness_s=60)
    assert f.process(reading(T0)) and f.process(reading(T0 + 100))  # in order
    assert f.process(reading(T0 + 95))  # out of order, within grace
    assert f.process(reading(T0 + 30))  # late: 60 s behind the watermark (T0+90), within the limit
    with pytest.raises(Invalid) as err:
        f.process(reading(T0 + 29))  # 61 s behind the watermark: too late
    assert err.value.reason == "late" and "limit 60 s" in err.value.detail


def test_late_filter_watermark_is_per_partition_and_unknown_at_start():
    f = LateFilter(grace_s=0, max_lateness_s=5)
    assert f.process(reading(T0 - 10_000, partition=1))  # nothing seen on partition 1 yet: not late
    f.process(reading(T0 + 100, partition=0))
    assert f.process(reading(T0 - 9_000, partition=1))  # partition 0 being ahead does not matter
    with pytest.raises(Invalid):
        f.process(reading(T0 + 90, partition=0))


def test_windows_ending_together_close_shortest_first():
    tr = WindowTracker(["1h", "1m", "5m"], grace_s=0, idle_close_s=1000)
    ts = (T0 + 3599) * S  # the last second of an hour: its 1m, 5m and 1h windows all end at T0+3600
    for w in tr.windows(ts):
        tr.add(0, w, "s1", "temperature")
    tr.observe(0, (T0 + 3600) * S, 0.0)
    assert [d.window.period for d in tr.due(0.0)] == ["1m", "5m", "1h"]
