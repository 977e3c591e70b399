"""Bounded shutdown pieces: a sink runner asked to finish during an outage, the deadline helpers, and the
consumer's final commit and close against a broker that does not answer."""
import threading
import time

from prometheus_client import CollectorRegistry

from pipeline.config import KafkaConfig, RetryConfig, SinkConfig
from pipeline.ingest.dispatch import ConsumeDispatch
from pipeline.observability.metrics import Metrics
from pipeline.runtime.batch import Batch
from pipeline.runtime.deadline import Deadline, call_bounded
from pipeline.sinks.base import BatchingSink


class DownSink(BatchingSink):
    """Its service is away: every write fails with a transient error."""

    name = "down"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.attempts = 0

    def select(self, batch):
        return batch.readings

    def is_transient(self, err):
        return isinstance(err, ConnectionError)

    def write(self, records):
        self.attempts += 1
        raise ConnectionError("service away")


def down_sink() -> DownSink:
    return DownSink(settings=SinkConfig(batch_size=1, flush_interval_ms=1),
                    retry=RetryConfig(initial_interval_s=0.01, max_interval_s=0.05),
                    metrics=Metrics(CollectorRegistry()), queue_max_batches=2)


def test_finish_on_a_full_queue_returns_at_once_and_the_runner_stops_at_the_deadline():
    sink = down_sink()
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    never = threading.Event()
    first = Batch([1], [], {("t", 0): 1}, 1)
    assert sink.put(first, never)
    while sink.attempts == 0:  # the runner holds the first batch and retries it
        time.sleep(0.01)
    queued = [Batch([n], [], {("t", 0): n}, 1) for n in (2, 3)]
    for b in queued:
        assert sink.put(b, never)
    assert sink.queue.full()

    caller = threading.Thread(target=sink.finish, daemon=True)  # a thread: a blocking finish() fails, not hangs
    caller.start()
    caller.join(0.1)
    assert not caller.is_alive(), "finish() waits for queue space"

    thread.join(0.3)
    assert thread.is_alive()  # finishing is not giving up: the runner keeps retrying until the deadline
    deadline = Deadline(0.0)
    sink.stop_event.set()
    thread.join(deadline.left() + 1.0)
    assert not thread.is_alive()
    assert sink.attempts > 1
    assert not any(b.done.is_set() for b in [first, *queued])  # nothing written, nothing may be committed


def test_finish_drains_what_is_queued_before_ending():
    class ListSink(DownSink):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.written = []

        def write(self, records):
            self.written.extend(records)

        def after_write(self, records):
            pass

    sink = ListSink(settings=SinkConfig(batch_size=10, flush_interval_ms=10_000),
                    retry=RetryConfig(), metrics=Metrics(CollectorRegistry()), queue_max_batches=2)
    batches = [Batch([1], [], {}, 1), Batch([2], [], {}, 1)]
    for b in batches:
        sink.queue.put_nowait(b)
    caller = threading.Thread(target=sink.finish, daemon=True)
    caller.start()
    caller.join(0.1)
    assert not caller.is_alive()  # the queue is full: the stop request does not fit, and is not needed
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    thread.join(2)
    assert not thread.is_alive()
    assert sink.written == [1, 2] and all(b.done.is_set() for b in batches)


def test_call_bounded_abandons_a_call_that_outlives_its_timeout():
    release = threading.Event()
    started = time.monotonic()
    assert call_bounded("blocked", release.wait, 0.2) is False
    assert time.monotonic() - started < 0.5
    release.set()
    assert call_bounded("quick", lambda: None, 1.0) is True
    assert call_bounded("raises", lambda: 1 / 0, 1.0) is False


class FrozenBroker:
    """A consumer whose broker does not answer: commit and close block until released."""

    def __init__(self):
        self.release = threading.Event()
        self.committed = []
        self.closed = False

    def commit(self, offsets, asynchronous):
        self.committed.append({(tp.topic, tp.partition): tp.offset for tp in offsets})
        self.release.wait(5)  # finite, so that an unbounded drain fails the test instead of hanging it
        return offsets

    def close(self):
        self.release.wait(5)  # finite, so that an unbounded drain fails the test instead of hanging it
        self.closed = True


def source_with(consumer) -> ConsumeDispatch:
    cfg = KafkaConfig(bootstrap_servers="127.0.0.1:9")  # never contacted: the consumer is replaced
    source = ConsumeDispatch(cfg, "test", None, [], Metrics(CollectorRegistry()), 10, 1.0)
    source.consumer.close()
    source.consumer = consumer
    return source


def test_drain_and_close_commits_only_held_batches_and_is_bounded_by_a_frozen_broker():
    broker = FrozenBroker()
    source = source_with(broker)
    held, not_held, after = (Batch([], [], {("raw", 0): n}, 1) for n in (10, 20, 30))
    for b in (held, not_held, after):
        source.inflight.add(b)
    held.sink_done()
    after.sink_done()  # done, but behind a batch one sink never took: not committable

    started = time.monotonic()
    assert source.drain_and_close(0.8) is False
    assert time.monotonic() - started < 1.2
    assert broker.committed == [{("raw", 0): 10}]
    broker.release.set()


def test_drain_and_close_is_true_when_every_batch_is_held_and_the_broker_answers():
    broker = FrozenBroker()
    broker.release.set()
    source = source_with(broker)
    batch = Batch([], [], {("raw", 1): 5}, 1)
    source.inflight.add(batch)
    batch.sink_done()
    assert source.drain_and_close(2.0) is True
    assert broker.committed == [{("raw", 1): 5}] and broker.closed
