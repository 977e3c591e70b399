"""Quiet rounds of the batching runner: after a round that ended at its interval with few records, the thread sleeps
through the next round and takes the batches queued meanwhile at once, instead of waking for each one; a busy round,
a filling queue, finish() and stop() each end that."""
import threading
import time

from prometheus_client import CollectorRegistry

from pipeline.config import RetryConfig, SinkConfig
from pipeline.observability.metrics import Metrics
from pipeline.runtime.batch import Batch
from pipeline.sinks.base import BatchingSink


class TimedSink(BatchingSink):
    """Notes when each batch was taken by the thread (select) and what each write held."""
    name = "timed"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.taken: list[tuple[int, float]] = []  # (first record of the batch, monotonic time)
        self.writes: list[list] = []

    def select(self, batch):
        self.taken.append((batch.readings[0], time.monotonic()))
        return batch.readings

    def write(self, records):
        self.writes.append(list(records))

    def after_write(self, records):
        pass


def start(interval_ms: int, batch_size: int = 100, queue_max: int = 16) -> tuple[TimedSink, threading.Thread]:
    sink = TimedSink(settings=SinkConfig(batch_size=batch_size, flush_interval_ms=interval_ms), retry=RetryConfig(),
                     metrics=Metrics(CollectorRegistry()), queue_max_batches=queue_max)
    t = threading.Thread(target=sink.run)
    t.start()
    return sink, t


def quiet_round(sink: TimedSink, first: int) -> None:
    """Two small batches, written together at the interval: the next round is quiet."""
    a, b = Batch([first], [], {}, 1), Batch([first], [], {}, 1)
    assert sink.offer(a) and sink.offer(b) and b.done.wait(3)


def test_a_quiet_round_takes_its_batches_together_at_its_end_and_writes_them_once():
    sink, t = start(interval_ms=150)
    quiet_round(sink, 0)
    batches = [Batch([i], [], {}, 1) for i in (1, 2, 3)]
    put_at = []
    for b in batches:
        put_at.append(time.monotonic())
        assert sink.offer(b)
        time.sleep(0.03)
    assert batches[-1].done.wait(2)
    sink.finish()
    t.join(2)
    taken = dict(sink.taken)
    assert taken[1] - put_at[0] < 0.1  # the round's first batch wakes the thread and starts the interval
    # The later ones waited in the queue (no wake-up each) and were taken together at the round's end.
    assert taken[2] - put_at[1] > 0.05 and taken[3] - put_at[2] > 0.03 and abs(taken[3] - taken[2]) < 0.02
    assert taken[3] - put_at[0] < 0.3  # and the round lasted its interval, no longer
    assert sink.writes == [[0, 0], [1, 2, 3]]


def test_a_busy_round_goes_back_to_taking_batches_as_they_come():
    sink, t = start(interval_ms=150, batch_size=8)
    quiet_round(sink, 0)
    big = Batch(list(range(10, 20)), [], {}, 1)  # 10 records >= batch_size: written at once, the round was busy
    assert sink.offer(big) and big.done.wait(2)
    b = Batch([30], [], {}, 1)
    c = Batch([31], [], {}, 1)
    assert sink.offer(b)
    time.sleep(0.05)
    put_c = time.monotonic()
    assert sink.offer(c) and c.done.wait(2)
    sink.finish()
    t.join(2)
    assert dict(sink.taken)[31] - put_c < 0.03  # taken on arrival, not at the end of the round


def test_a_filling_queue_wakes_a_quiet_round_early():
    sink, t = start(interval_ms=1000, queue_max=4)
    quiet_round(sink, 0)
    first = Batch([1], [], {}, 1)
    sink.offer(first)
    time.sleep(0.05)
    put_at = time.monotonic()
    # The queue holds 4 writes of 100 records (400); two batches of 100 more fill half: the rate rose, take them now.
    sink.offer(Batch([2] * 100, [], {}, 1))
    sink.offer(Batch([3] * 100, [], {}, 1))
    time.sleep(0.2)
    assert dict(sink.taken).get(3, 1e18) - put_at < 0.15  # not the round's 1 s
    sink.stop()
    t.join(2)
    assert not t.is_alive()


def test_finish_ends_a_quiet_round_at_once_and_flushes_what_it_holds():
    sink, t = start(interval_ms=1000)
    quiet_round(sink, 0)
    first, second = Batch([1], [], {}, 1), Batch([2], [], {}, 1)
    sink.offer(first)
    time.sleep(0.02)
    sink.offer(second)
    asked = time.monotonic()
    sink.finish()
    t.join(2)
    assert not t.is_alive() and time.monotonic() - asked < 0.5  # not the round's 1 s
    assert first.done.is_set() and second.done.is_set() and sink.writes[-1] == [1, 2]


def test_after_a_quiet_round_of_one_batch_the_next_batch_is_written_at_once_until_batches_pile_up():
    sink, t = start(interval_ms=200)
    written = sink.write

    def slow_write(records):
        if records == [1]:
            time.sleep(0.1)
        written(records)

    sink.write = slow_write
    lone = Batch([0], [], {}, 1)
    assert sink.offer(lone) and lone.done.wait(2)  # waited its interval for nothing: a single batch came
    b = Batch([1], [], {}, 1)
    put_at = time.monotonic()
    assert sink.offer(b)
    time.sleep(0.03)
    c, d = Batch([2], [], {}, 1), Batch([3], [], {}, 1)
    sink.offer(c)
    sink.offer(d)  # both queued while [1] is being written
    assert b.done.wait(2) and time.monotonic() - put_at < 0.2  # written at once, not after the 200 ms interval
    assert d.done.wait(2)
    sink.finish()
    t.join(2)
    assert sink.writes == [[0], [1], [2, 3]]  # the two that piled up went together
