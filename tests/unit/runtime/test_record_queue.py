"""The sinks' hand-off queue is bounded by records, not batches: many small batches (a medium rate) fit where
16 batches used to fill it; a few large ones fill it; while the sink holds a refused write, the old batch
bound applies again so an outage pauses the consumer at once."""
import queue
import threading

import pytest
from prometheus_client import CollectorRegistry

from pipeline.config import RetryConfig, SinkConfig
from pipeline.observability.metrics import Metrics
from pipeline.runtime.batch import Batch
from pipeline.runtime.record_queue import RecordQueue
from pipeline.sinks.base import BatchingSink


def batch(n: int) -> Batch:
    return Batch(list(range(n)), [], {}, 1)


def test_small_batches_beyond_the_batch_count_fit_while_their_records_do():
    q = RecordQueue(max_records=1600, max_batches=16, weigh=lambda b: len(b.readings))
    for _ in range(100):  # 100 batches of 15 records: 1,500 records
        q.put_nowait(batch(15))
    assert (q.batches(), q.qsize()) == (100, 1500)
    q.put_nowait(batch(200))  # below the bound when offered: admitted whole, the bound is passed by one batch
    with pytest.raises(queue.Full):
        q.put_nowait(batch(1))
    while q.qsize() > 1600 - 15:
        q.get_nowait()
    q.put_nowait(batch(1))


def test_large_batches_fill_it_by_their_records():
    q = RecordQueue(max_records=1000, max_batches=16, weigh=lambda b: len(b.readings))
    q.put_nowait(batch(600))
    q.put_nowait(batch(600))
    with pytest.raises(queue.Full):
        q.put_nowait(batch(1))
    assert [len(q.get_nowait().readings) for _ in range(2)] == [600, 600]  # first in, first out
    assert q.empty() and q.qsize() == 0


def test_counting_batches_max_batches_fill_it_whatever_their_size():
    q = RecordQueue(max_records=1600, max_batches=16, weigh=lambda b: len(b.readings))
    q.by_batches = True
    for _ in range(16):
        q.put_nowait(batch(2))
    with pytest.raises(queue.Full):
        q.put_nowait(batch(2))
    q.by_batches = False  # the store takes writes again: the record bound applies
    q.put_nowait(batch(2))
    assert q.batches() == 17


def test_a_blocking_put_waits_for_room_and_a_get_wakes_it():
    q = RecordQueue(max_records=10, max_batches=2, weigh=lambda b: len(b.readings))
    q.put(batch(10))
    done = threading.Event()
    t = threading.Thread(target=lambda: (q.put(batch(5)), done.set()))
    t.start()
    assert not done.wait(0.1)
    q.get()
    assert done.wait(2)
    t.join(2)


class Refusing(BatchingSink):
    name = "refusing"

    def select(self, b):
        return b.readings

    def write(self, records):
        raise ConnectionError("store away")


def test_a_sink_queue_holds_its_own_full_writes_and_pauses_early_while_blocked():
    sink = Refusing(settings=SinkConfig(batch_size=100, flush_interval_ms=5), retry=RetryConfig(),
                    metrics=Metrics(CollectorRegistry()), queue_max_batches=4)
    for _ in range(30):  # 30 batches of 10 records: 300 of the 400 the queue holds (4 writes of 100)
        assert sink.offer(batch(10))
    assert sink.queue_depth() == 30
    assert sink.offer(batch(100)) and not sink.offer(batch(1))
    sink._block(ConnectionError("store away"))  # the sink's thread does this when a write is refused
    assert sink.blocked() is not None and sink.queue.by_batches
    sink._unblock()
    assert not sink.queue.by_batches
    sink.durable = False  # best-effort: a consumer of its own, so its queue counts batches
    assert sink.queue.by_batches
