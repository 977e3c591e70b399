"""The generic runner pieces: error routing, the in-order commit tracker, backoff, the batching sink."""
import random
import threading

import pytest
from prometheus_client import CollectorRegistry

from pipeline.config import RetryConfig, SinkConfig
from pipeline.observability.metrics import Metrics
from pipeline.records import FAILED, INVALID, Invalid, RawMessage
from pipeline.runtime.batch import Batch, InFlight
from pipeline.runtime.chain import Refusal, StageChain, merge_refusals
from pipeline.runtime.retry import Backoff, RetryExhausted, retry_call
from pipeline.sinks.base import BatchingSink


class Split:
    name = "split"

    def process(self, msg):
        return msg.payload.decode().split(",")


class Upper:
    name = "upper"

    def process(self, item):
        if item == "bad":
            raise Invalid("bad_item", "it is bad")
        if item == "boom":
            raise ZeroDivisionError("bug")
        if item == "skip":
            return []
        return [item.upper()]


def test_chain_routes_invalid_and_failures_and_filters():
    ch = StageChain([Split(), Upper()], Metrics(CollectorRegistry()))
    out, dead = [], []
    ch.run(RawMessage("t/x", b"a,bad,skip,boom,b", 0.0), out, dead)
    assert out == ["A", "B"]
    assert [(d.reason, d.stage, d.kind) for d in dead] == [("bad_item", "upper", "invalid"),
                                                          ("processing_error", "upper", FAILED)]
    assert "ZeroDivisionError" in dead[1].error


def test_refusals_of_one_message_merge_into_one_letter_per_kind_under_the_most_common_reason():
    msg = RawMessage("t/x", b"payload", 0.0)
    refusals = [Refusal("validate", "late", "late: a", INVALID, "a"), Refusal("validate", "bad", "bad: b", INVALID, "b"),
                Refusal("lateness", "bad", "bad: c", INVALID, "c"), Refusal("transform", "processing_error", "E", FAILED, "d")]
    invalid, failed = merge_refusals(msg, refusals)
    assert (invalid.kind, invalid.reason, invalid.stage, invalid.metric) == (INVALID, "bad", "validate", None)
    assert invalid.refused == {"a": "late", "b": "bad", "c": "bad"} and invalid.error.startswith("3 records refused; a: late: a")
    assert (failed.kind, failed.reason, failed.metric, failed.refused, failed.error) == (FAILED, "processing_error", "d", {"d": "processing_error"}, "E")
    [tie] = merge_refusals(msg, refusals[:2])
    assert tie.reason == "late"  # the earliest among equals
    [whole] = merge_refusals(msg, [Refusal("decode", "invalid_json", "invalid_json: x", INVALID)])
    assert whole.refused == {} and "metrics" not in dict(whole.headers())


def test_inflight_commits_only_the_completed_prefix():
    f = InFlight()
    b1, b2, b3 = (Batch([], [], {("t", 0): n}, sinks=2) for n in (10, 20, 30))
    for b in (b1, b2, b3):
        f.add(b)
    b2.sink_done(); b2.sink_done()
    assert f.completed() == {}  # b1 still open: nothing past it may be committed
    b1.sink_done()
    assert f.completed() == {}
    b1.sink_done()
    assert f.completed() == {("t", 0): 20}
    assert len(f) == 1


def test_backoff_grows_and_is_bounded():
    b = Backoff(RetryConfig(initial_interval_s=0.1, max_interval_s=1.0, multiplier=2, jitter=0.0), random.Random(1))
    assert [round(b.next_delay(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    j = Backoff(RetryConfig(initial_interval_s=1.0, max_interval_s=1.0, jitter=0.5), random.Random(2))
    delays = [j.next_delay() for _ in range(50)]
    assert all(0.5 <= d <= 1.5 for d in delays) and len(set(delays)) > 1


def test_retry_call_retries_transient_then_succeeds_and_gives_up_after_max_elapsed():
    policy = RetryConfig(initial_interval_s=0.001, max_interval_s=0.002, jitter=0.0)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "ok"

    assert retry_call(flaky, operation="x", policy=policy, is_transient=lambda e: isinstance(e, ConnectionError)) == "ok"
    assert len(calls) == 3
    with pytest.raises(RetryExhausted):
        retry_call(lambda: (_ for _ in ()).throw(ConnectionError("down")), operation="x", policy=policy,
                   is_transient=lambda e: True, max_elapsed_s=0.02)
    with pytest.raises(ValueError):
        retry_call(lambda: (_ for _ in ()).throw(ValueError("data")), operation="x", policy=policy,
                   is_transient=lambda e: isinstance(e, ConnectionError))


class ListSink(BatchingSink):
    name = "list"

    def __init__(self, fail_times=0, **kw):
        super().__init__(**kw)
        self.writes, self.fail_times = [], fail_times

    def select(self, batch):
        return batch.readings

    def is_transient(self, err):
        return isinstance(err, ConnectionError)

    def write(self, records):
        if self.fail_times:
            self.fail_times -= 1
            raise ConnectionError("flaky")
        self.writes.append(list(records))

    def after_write(self, records):
        pass


def make_sink(**kw):
    return ListSink(settings=SinkConfig(batch_size=3, flush_interval_ms=50),
                    retry=RetryConfig(initial_interval_s=0.001, max_interval_s=0.005),
                    metrics=Metrics(CollectorRegistry()), queue_max_batches=4, **kw)


def test_batching_sink_flushes_at_size_and_on_interval_and_retries():
    sink = make_sink(fail_times=2)
    t = threading.Thread(target=sink.run)
    t.start()
    stop = threading.Event()
    b1, b2, b3 = Batch([1, 2], [], {}, 1), Batch([3, 4], [], {}, 1), Batch([5], [], {}, 1)
    for b in (b1, b2):
        sink.put(b, stop)
    assert b2.done.wait(2) and b1.done.is_set()  # 4 records >= batch_size 3: flushed together
    sink.put(b3, stop)
    assert b3.done.wait(2)  # a lone record goes out when the interval passes
    sink.finish()
    t.join(2)
    assert sink.writes == [[1, 2, 3, 4], [5]]
    assert sink.metrics.registry.get_sample_value("pipeline_retries_total", {"operation": "list_write"}) == 2
