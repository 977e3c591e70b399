"""The offset continuity tracker: holes found, fetched again, given up (commits held), or allowed."""
from __future__ import annotations

import pytest

from pipeline.ingest.continuity import DROP, SKIP, TAKE, Continuity, missing_by_partition, sensor_id

TP = ("raw", 3)


def feed(c: Continuity, offsets, now: float = 0.0, tp=TP) -> list[str]:
    return [c.check(tp, o, now) for o in offsets]


def test_offsets_that_follow_on_are_all_taken_from_the_committed_position():
    c = Continuity()
    c.start(TP, 100)
    assert feed(c, range(100, 110)) == [TAKE] * 10
    assert c.detected == 0 and c.seeks_due(1.0) == [] and c.hold(TP) is None


def test_a_hole_right_after_the_committed_position_is_found():
    c = Continuity()
    c.start(TP, 100)
    assert feed(c, [105, 106]) == [DROP, DROP]
    assert c.detected == 1
    assert [(e, g.first, g.last) for e, g in c.take_events()] == [("detected", 100, 104)]


def test_unknown_start_is_learnt_from_the_first_message():
    c = Continuity()
    c.start(TP, None)
    assert feed(c, [7, 8, 10]) == [TAKE, TAKE, DROP]


def test_hole_is_fetched_again_from_its_first_offset_and_filled():
    c = Continuity(max_attempts=3, max_wait_s=5.0, backoff_s=0.2)
    c.start(TP, 0)
    assert feed(c, [0, 1, 2, 10, 11, 12]) == [TAKE, TAKE, TAKE, DROP, DROP, DROP]
    assert c.hold(TP) == 3  # nothing past the hole is taken meanwhile
    assert c.seeks_due(0.0) == [(TP, 3)]
    assert c.seeks_due(0.0) == []  # one seek at a time
    # The fetch from 3 on: everything again, in order.
    assert feed(c, range(3, 14), 0.1) == [TAKE] * 11
    assert c.refetched == 1 and c.given_up == 0 and c.hold(TP) is None
    assert [e for e, _ in c.take_events()] == ["detected", "refetched"]


def test_a_hole_still_there_after_a_seek_waits_the_backoff_before_the_next():
    c = Continuity(max_attempts=3, max_wait_s=5.0, backoff_s=0.2)
    c.start(TP, 0)
    feed(c, [5])
    assert c.seeks_due(0.0) == [(TP, 0)]
    assert feed(c, [5, 6], 0.05) == [DROP, DROP]  # still missing
    assert c.seeks_due(0.1) == []
    assert c.seeks_due(0.26) == [(TP, 0)]


def test_a_hole_still_missing_after_the_attempts_and_the_wait_is_given_up_and_holds_commits():
    c = Continuity(max_attempts=2, max_wait_s=1.0, backoff_s=0.0)
    c.start(TP, 10)
    feed(c, [17, 18])
    now = 0.0
    for _ in range(4):  # 0.0 .. 0.9 s: under the wait
        assert c.seeks_due(now) == [(TP, 10)]
        assert feed(c, [17], now) == [DROP]
        now += 0.3
    assert c.seeks_due(now) == [(TP, 10)]
    assert feed(c, [17, 18, 19], now) == [TAKE] * 3  # attempts spent and the wait over: take what follows
    assert c.given_up == 1
    assert [(g.first, g.last, g.missing) for g in c.held()] == [(10, 16, 7)]
    assert c.cap({TP: 20, ("raw", 0): 50}) == {TP: 10, ("raw", 0): 50}
    assert c.cap({TP: 5}) == {TP: 5}
    assert c.seeks_due(now + 10) == []
    assert missing_by_partition(c.held()) == {TP: 7}
    c.forget(TP)  # the partition went elsewhere: its next owner reads from the hole
    assert c.hold(TP) is None and c.held() == []


def test_attempts_alone_do_not_give_up_before_the_wait():
    c = Continuity(max_attempts=1, max_wait_s=10.0, backoff_s=0.0)
    c.start(TP, 0)
    feed(c, [3])
    for now in (0.0, 1.0, 2.0):
        assert c.seeks_due(now) == [(TP, 0)]
        assert feed(c, [3], now) == [DROP]
    assert c.given_up == 0


def test_a_hole_partly_filled_is_narrowed():
    c = Continuity(max_attempts=1, max_wait_s=0.0, backoff_s=0.0)
    c.start(TP, 0)
    feed(c, [0, 10])
    c.seeks_due(0.0)
    assert feed(c, [1], 0.0) == [TAKE]  # its first record arrived: filled as far as the tracker is concerned
    assert feed(c, [2, 3], 0.0) == [TAKE, TAKE]


def test_messages_before_the_expected_offset_are_skipped_as_read_before():
    c = Continuity()
    c.start(TP, 0)
    feed(c, [0, 1, 2])
    assert feed(c, [1, 2, 3]) == [SKIP, SKIP, TAKE]


def test_allow_mode_counts_a_hole_and_passes_over_it():
    c = Continuity("allow")
    c.start(TP, 0)
    assert feed(c, [0, 1, 5, 6]) == [TAKE] * 4
    assert c.allowed == 1 and c.seeks_due(1.0) == [] and c.hold(TP) is None
    assert [(e, g.first, g.last) for e, g in c.take_events()] == [("allowed", 2, 4)]


def test_a_failed_seek_is_tried_again():
    c = Continuity(backoff_s=0.0)
    c.start(TP, 0)
    feed(c, [4])
    assert c.seeks_due(0.0) == [(TP, 0)]
    c.seek_failed(TP)
    assert c.seeks_due(0.1) == [(TP, 0)]


def test_partitions_are_independent():
    c = Continuity()
    c.start(TP, 0)
    c.start(("raw", 1), 0)
    assert feed(c, [0, 3]) == [TAKE, DROP]
    assert feed(c, [0, 1, 2], tp=("raw", 1)) == [TAKE] * 3


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="refetch or allow"):
        Continuity("ignore")


def test_sensor_id_names_topic_and_partition_within_the_limit():
    assert sensor_id("sensor-readings", 3) == "kafka:sensor-readings:3"
    long = sensor_id("t" * 80, 12)
    assert len(long) == 50 and long.endswith(":12")


def test_a_hole_below_the_log_start_was_deleted_by_retention_and_only_the_rest_is_fetched_again():
    c = Continuity()
    c.start(TP, 100)  # committed long ago; retention has since deleted up to 150
    assert feed(c, [150, 151]) == [DROP, DROP]
    c.log_start(TP, 150)
    assert [(e, g.first, g.last) for e, g in c.take_events()] == [("detected", 100, 149), ("expired", 100, 149)]
    assert c.seeks_due(0.0) == [(TP, 150)]
    assert feed(c, [150, 151]) == [TAKE, TAKE]
    assert c.refetched == 0 and c.expired == 1 and c.hold(TP) is None and c.take_events() == []


def test_a_hole_partly_below_the_log_start_keeps_its_rest():
    c = Continuity()
    c.start(TP, 100)
    feed(c, [160])
    c.log_start(TP, 150)
    c.log_start(TP, 90)  # an older answer changes nothing
    assert c.seeks_due(0.0) == [(TP, 150)]
    assert c.hold(TP) == 150
