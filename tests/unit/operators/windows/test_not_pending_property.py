"""Property: WindowTracker.not_pending (each (partition, step) of a batch resolved once) gives the same windows,
in the same order, as asking for every reading and period whether its window is pending (the straightforward
loop it replaced, kept here as the reference), for random periods, pending states and event times."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.operators.windows.keys import PendingKeys
from pipeline.operators.windows.tracker import WindowTracker

US = 1_000_000
period_sets = st.sampled_from([["1m", "5m", "1h", "1d"], ["10s", "1m"], ["90s", "1m"], ["7s", "1h"], ["1m"]])
sensors = st.sampled_from(["a", "b", "c"])
metrics = st.sampled_from(["t", "h"])
times = st.integers(-3 * 86400, 3 * 86400).map(lambda s: 1_765_000_000 * US + s * US // 7)
rows = st.lists(st.tuples(sensors, metrics, st.just(1.0), times), max_size=40)


def reference(tracker: WindowTracker, rows, partition_of) -> dict:
    new: dict[tuple, dict] = {}
    for sensor_id, metric, _value, ts in rows:
        partition = partition_of.get(sensor_id, -1)
        for w in tracker.windows(ts):
            if not tracker.is_pending(partition, w, sensor_id, metric):
                new.setdefault((partition, w), {})[(sensor_id, metric)] = None
    return new


def ordered(staged: dict) -> list:
    """Each window's keys in order (dict equality alone ignores it)."""
    return sorted((pw, list(keys)) for pw, keys in staged.items())


@settings(max_examples=300, deadline=None)
@given(periods=period_sets, batch=rows, already=rows, parts=st.dictionaries(sensors, st.integers(-1, 2)))
def test_not_pending_matches_the_per_reading_reference(periods, batch, already, parts):
    tracker = WindowTracker(periods, grace_s=10, idle_close_s=60)
    for (partition, w), keys in reference(tracker, already, parts).items():  # some windows already pending
        for sensor_id, metric in keys:
            tracker.pending.setdefault((partition, w), PendingKeys()).add(sensor_id, metric)
    assert ordered(tracker.not_pending(batch, parts)) == ordered(reference(tracker, batch, parts))


def test_the_step_divides_every_period():
    tracker = WindowTracker(["90s", "1m", "1h"], grace_s=10, idle_close_s=60)
    assert tracker.step == 30 * US and all(size % tracker.step == 0 for size in tracker.sizes.values())
