"""The format operator runner: a stage right after decoding that hands partitions on, and a stop while the
operator waits for its store ends the batch instead of dead-lettering it."""
import pytest
from prometheus_client import CollectorRegistry

from pipeline.observability.metrics import Metrics
from pipeline.records import RawMessage
from pipeline.runtime.chain import StageChain
from pipeline.runtime.format_operator import FormatOperatorStage, OperatorStopped, SkipOperatorRecords
from pipeline.runtime.retry import Stopped


class Thing:
    """A record only the operator reads."""

    def __init__(self, source):
        self.source = source


class Unwrap:
    name = "decode"

    def process_batch(self, items, refused):
        return [Thing(m) for m in items]


class Operator:
    accepts = Thing

    def __init__(self, fail=None):
        self.fail, self.calls = fail, []

    def process_batch(self, items, refused):
        if self.fail:
            raise self.fail
        return [t.source.mqtt_topic for t in items]

    def partitions_assigned(self, partitions):
        self.calls.append(("assigned", partitions))

    def partitions_revoked(self, partitions):
        self.calls.append(("revoked", partitions))


def chain(op):
    metrics = Metrics(CollectorRegistry())
    return StageChain([Unwrap(), FormatOperatorStage("thing", op, metrics)], metrics), metrics


def msgs(n):
    return [RawMessage(f"t/{i}", b"x", 0.0, partition=0, offset=i) for i in range(n)]


def test_the_operator_takes_its_records_in_order_and_is_timed():
    c, metrics = chain(Operator())
    out, dead = c.run_batch(msgs(3))
    assert (out, dead) == (["t/0", "t/1", "t/2"], [])
    assert metrics.registry.get_sample_value("pipeline_format_operator_seconds_count", {"format": "thing"}) == 1


def test_partitions_are_handed_on():
    op = Operator()
    stage = FormatOperatorStage("thing", op, Metrics(CollectorRegistry()))
    stage.partitions_assigned({0, 1})
    stage.partitions_revoked({1})
    assert op.calls == [("assigned", {0, 1}), ("revoked", {1})]


def test_a_stop_while_the_store_is_away_ends_the_batch_and_refuses_nothing():
    c, _ = chain(Operator(fail=Stopped("sparkplug_births")))
    with pytest.raises(OperatorStopped):
        c.run_batch(msgs(3))


def test_a_feed_skips_the_records_only_an_operator_reads():
    metrics = Metrics(CollectorRegistry())
    c = StageChain([Unwrap(), SkipOperatorRecords((Thing,))], metrics)
    assert c.run_batch(msgs(2)) == ([], [])
