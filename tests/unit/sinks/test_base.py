"""The batching sink's timed hook: tick() runs on its interval in the sink's thread, with or without batches."""
import threading
import time
from typing import NamedTuple

from prometheus_client import CollectorRegistry

from pipeline.config import RetryConfig, SinkConfig
from pipeline.observability.metrics import Metrics
from pipeline.runtime.batch import Batch
from pipeline.sinks.base import BatchingSink


class TickingSink(BatchingSink):
    name = "ticking"
    tick_interval_s = 0.05

    def __init__(self, **kw):
        super().__init__(**kw)
        self.ticks: list[str] = []
        self.writes: list[list] = []

    def select(self, batch):
        return batch.readings

    def write(self, records):
        self.writes.append(list(records))

    def after_write(self, records):
        pass

    def tick(self):
        self.ticks.append(threading.current_thread().name)


def test_tick_runs_on_its_interval_in_the_sink_thread_between_batches():
    sink = TickingSink(settings=SinkConfig(batch_size=10, flush_interval_ms=20), retry=RetryConfig(),
                       metrics=Metrics(CollectorRegistry()), queue_max_batches=4)
    t = threading.Thread(target=sink.run, name="sink-ticking")
    t.start()
    time.sleep(0.3)  # no batch at all: the thread must still wake up for its ticks
    b = Batch([1, 2], [], {}, 1)
    sink.put(b, threading.Event())
    assert b.done.wait(2)
    time.sleep(0.15)
    sink.finish()
    t.join(2)
    assert len(sink.ticks) >= 5 and set(sink.ticks) == {"sink-ticking"}
    assert sink.writes == [[1, 2]]


def test_no_tick_without_interval():
    class Quiet(TickingSink):
        tick_interval_s = None

    sink = Quiet(settings=SinkConfig(batch_size=10, flush_interval_ms=20), retry=RetryConfig(),
                 metrics=Metrics(CollectorRegistry()), queue_max_batches=4)
    t = threading.Thread(target=sink.run)
    t.start()
    time.sleep(0.2)
    sink.finish()
    t.join(2)
    assert sink.ticks == []


class Rec(NamedTuple):
    name: str
    source: object = None
    metric: str = "pressure"


class Refusing(TickingSink):
    """Refuses any write that holds the record "bad" (a value the database rejects), like PostgreSQL would."""

    def write(self, records):
        self.writes.append([r.name for r in records])
        if any(r.name == "bad" for r in records):
            raise ValueError("value out of range")


class Letters:
    def __init__(self):
        self.sent = []

    def send(self, letters):
        self.sent.extend(letters)


def test_a_refused_record_is_dead_lettered_at_once_without_retry_sleeps():
    letters = Letters()
    retry = RetryConfig(initial_interval_s=60.0)  # a retry's backoff would hold this test for a minute
    sink = Refusing(settings=SinkConfig(batch_size=10, flush_interval_ms=20), retry=retry,
                    metrics=Metrics(CollectorRegistry()), queue_max_batches=4, dead_letters=letters)
    names = ["a", "b", "bad", "c", "d", "e", "f", "g"]
    sink._write_isolating([Rec(n) for n in names])
    assert sink.writes.count(["bad"]) == 1  # tried alone once, not again after a backoff
    assert sorted(n for w in sink.writes if "bad" not in w for n in w) == ["a", "b", "c", "d", "e", "f", "g"]
    [letter] = letters.sent
    assert (letter.reason, letter.attempts, letter.metric) == ("sink_rejected", 1, "pressure")
    assert "value out of range" in letter.error


def test_the_sink_thread_marks_a_write_busy_while_it_runs_and_idle_after():
    """What the daemon's StuckWatch reads: ("write", since) during a write, None once it returned."""
    entered, release = threading.Event(), threading.Event()

    class Slow(TickingSink):
        tick_interval_s = None

        def write(self, records):
            entered.set()
            release.wait(5)

    sink = Slow(settings=SinkConfig(batch_size=1, flush_interval_ms=20), retry=RetryConfig(),
                metrics=Metrics(CollectorRegistry()), queue_max_batches=4)
    t = threading.Thread(target=sink.run)
    t.start()
    b = Batch([1], [], {}, 1)
    sink.put(b, threading.Event())
    assert entered.wait(2)
    step, since = sink.busy.state
    assert step == "write" and since <= time.monotonic()
    release.set()
    assert b.done.wait(2)
    assert sink.busy.state is None
    sink.finish()
    t.join(2)
