"""Receive stamps: the identity of readings without a device timestamp."""
from hypothesis import given
from hypothesis import strategies as st

from pipeline.ingest.identity import BRIDGE_HEADER, MID_HEADER, RECEIVED_US_HEADER, ReceiveStamps, own_records, relearn


def frozen_clock(value=1_700_000_000_000_000):
    return lambda: value


def test_messages_received_in_the_same_microsecond_get_distinct_increasing_stamps():
    stamps = ReceiveStamps(frozen_clock())
    got = [stamps.stamp(b"s/a/t", b"21.5", 1, mid, False) for mid in range(1, 1001)]
    assert got == sorted(set(got)) and len(got) == 1000


@given(st.lists(st.integers(min_value=0, max_value=2_000_000), min_size=1, max_size=300))
def test_stamps_strictly_increase_whatever_the_clock_does(times):
    clock = iter(times)
    stamps = ReceiveStamps(lambda: next(clock))
    got = [stamps.stamp(b"t", b"1", 0, 0, False) for _ in times]
    assert all(b > a for a, b in zip(got, got[1:]))


def test_a_resend_of_the_same_packet_keeps_its_stamp_and_anything_else_gets_a_new_one():
    stamps = ReceiveStamps(frozen_clock())
    first = stamps.stamp(b"s/a/t", b"21.5", 1, 7, False)
    assert stamps.stamp(b"s/a/t", b"21.5", 1, 7, True) == first and stamps.reused == 1
    assert stamps.stamp(b"s/a/t", b"21.6", 1, 7, True) != first  # same packet id, other payload: not a resend
    assert stamps.stamp(b"s/b/t", b"21.5", 1, 8, True) != first  # a DUP we never saw: a new reading
    assert stamps.stamp(b"s/a/t", b"21.5", 1, 7, False) != first  # no DUP flag: a new message reusing the id


def test_stamps_read_back_from_kafka_are_reused_after_a_restart_and_later_stamps_stay_above_them():
    before = ReceiveStamps(frozen_clock(5_000))
    sent = [(mid, before.stamp(b"s/a/t", f"{mid}".encode(), 1, mid, False)) for mid in range(1, 50)]
    after = ReceiveStamps(frozen_clock(1_000))  # the clock went back across the restart
    assert relearn(after, [(mid, stamp, b"s/a/t", f"{mid}".encode()) for mid, stamp in sent]) == 49
    assert after.stamp(b"s/a/t", b"30", 1, 30, True) == dict(sent)[30]
    assert after.stamp(b"s/a/t", b"x", 1, 60, False) > max(s for _, s in sent)


def test_only_this_bridges_records_with_a_packet_id_are_relearned():
    mine = [("mqtt_topic", b"s/a"), (RECEIVED_US_HEADER, b"123"), (MID_HEADER, b"9"), (BRIDGE_HEADER, b"me")]
    assert own_records(mine, b"me") == (9, 123, b"s/a")
    assert own_records(mine, b"other") is None
    assert own_records([("mqtt_topic", b"s/a"), (RECEIVED_US_HEADER, b"123")], b"me") is None  # QoS 0
    assert own_records(None, b"me") is None
