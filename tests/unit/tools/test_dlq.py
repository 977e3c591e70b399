"""Which dead letters `replay` sends and which marks it commits (pure; the Kafka part is in
tests/integration/test_dead_letters.py)."""
import json

from pipeline.tools.dlq import Letter, plan_replay, replay_kinds, select
from pipeline.records import EXHAUSTED, FAILED, INVALID

T = "dlq"


def letter(offset: int, reason: str = "sink_rejected", partition: int = 0, **reasons: str) -> Letter:
    headers = {"reason": reason, "kind": "retry_exhausted"}
    if reasons:
        headers.update(metrics=",".join(reasons), reasons=json.dumps(reasons))
    return Letter(T, partition, offset, b"k", b"{}", headers)


def offsets(letters):
    return [(x.partition, x.offset) for x in letters]


def test_replay_covers_retry_exhausted_by_default_and_what_kind_or_reason_asks_for():
    assert replay_kinds(None, None) == [EXHAUSTED]
    assert replay_kinds([INVALID], None) == [INVALID]
    assert replay_kinds(None, "invalid_json") == [INVALID, FAILED, EXHAUSTED]
    assert replay_kinds([INVALID], "invalid_json") == [INVALID]


def test_a_first_run_sends_everything_and_marks_past_it_a_second_sends_nothing():
    letters = [letter(0), letter(1), letter(0, partition=1)]
    send, marks = plan_replay(letters, None, None, {}, {})
    assert offsets(send) == [(0, 0), (0, 1), (1, 0)]
    assert marks == {(T, 0): 2, (T, 1): 1}
    again, marks2 = plan_replay(letters, None, None, marks, {})
    assert again == [] and marks2 == {}


def test_a_limit_marks_only_up_to_the_last_letter_sent():
    letters = [letter(0), letter(1), letter(2)]
    send, marks = plan_replay(letters, None, 2, {}, {})
    assert offsets(send) == [(0, 0), (0, 1)] and marks == {(T, 0): 2}
    rest, marks = plan_replay(letters, None, 2, marks, {})
    assert offsets(rest) == [(0, 2)] and marks == {(T, 0): 3}


def test_a_reason_run_keeps_its_own_mark_and_leaves_other_reasons_for_later():
    letters = [letter(0, "late"), letter(1, "invalid_json"), letter(2, "late"), letter(3, "unknown_unit", a="late", b="unknown_unit")]
    send, late_marks = plan_replay(letters, "late", None, {}, {})
    assert offsets(send) == [(0, 0), (0, 2), (0, 3)]  # the main reason or that of any refused reading
    assert late_marks == {(T, 0): 4}
    # Later, an unfiltered run: sends only what the `late` run did not, and marks past all of it.
    rest, marks = plan_replay(letters, None, None, {}, {"late": late_marks})
    assert offsets(rest) == [(0, 1)] and marks == {(T, 0): 4}
    # And a run for another reason skips letters a `late` run already sent, even if this reason is theirs too.
    unit, _ = plan_replay(letters, "unknown_unit", None, {}, {"late": late_marks})
    assert unit == []


def test_a_letter_already_covered_by_the_unfiltered_mark_is_not_sent_by_a_reason_run():
    letters = [letter(0, "late"), letter(1, "late")]
    send, marks = plan_replay(letters, "late", None, {(T, 0): 1}, {})
    assert offsets(send) == [(0, 1)] and marks == {(T, 0): 2}


def test_list_filters_on_any_reason_of_a_letter():
    letters = [letter(0, "late"), letter(1, "value_not_number", a="value_not_number", b="late"), letter(2, "x")]
    assert offsets(select(letters, "late", None)) == [(0, 0), (0, 1)]
    assert offsets(select(letters, None, 2)) == [(0, 0), (0, 1)]


def test_a_failed_notification_is_never_sent_to_the_raw_topic_and_is_marked_dealt_with():
    notification = Letter(T, 0, 1, b"7", b'{"channel": "ops", "digest": false, "alerts": []}',
                          {"reason": "notification_failed", "kind": "retry_exhausted", "stage": "alert_notifier"})
    letters = [letter(0), notification, letter(2)]
    send, marks = plan_replay(letters, None, None, {}, {})
    assert offsets(send) == [(0, 0), (0, 2)] and marks == {(T, 0): 3}
    send, marks = plan_replay([notification], "notification_failed", None, {}, {})
    assert send == [] and marks == {(T, 0): 2}
    assert not notification.replayable and letter(0).replayable
