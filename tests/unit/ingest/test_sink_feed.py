"""Where a best-effort sink's feed starts reading, and how far behind it is."""
from confluent_kafka import OFFSET_BEGINNING

from pipeline.ingest.sink_feed import feed_group, lag, start_offsets


def test_the_feed_commits_under_a_group_of_its_own():
    assert feed_group("pipeline", "jsonl") == "pipeline.sink.jsonl"


def test_the_own_checkpoint_comes_first_then_the_main_group_then_the_earliest():
    own = {0: 120, 1: -1001, 2: -1001}  # -1001: librdkafka's "no committed offset"
    main = {1: 300, 2: -1001}
    assert start_offsets(own, main, [0, 1, 2]) == {0: 120, 1: 300, 2: OFFSET_BEGINNING}


def test_a_checkpoint_at_zero_is_a_checkpoint():
    assert start_offsets({0: 0}, {0: 50}, [0]) == {0: 0}


def test_lag_counts_what_is_in_the_topic_past_the_written_position():
    assert lag({0: 100, 1: 40}, {0: 90, 1: 40}) == 10
    assert lag({0: 100}, {}) == 100  # never read: everything
    assert lag({0: 5}, {0: 9}) == 0  # a stale high watermark never gives a negative lag
