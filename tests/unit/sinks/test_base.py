"""The batching sink's timed hook: tick() runs on its interval in the sink's thread, with or without batches."""
import threading
import time
from typing import NamedTuple

import redis
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

    def send(self, letters, once_per_message=False):
        self.sent.extend(letters)


def test_a_refused_record_is_dead_lettered_at_once_without_retry_sleeps():
    letters = Letters()
    retry = RetryConfig(initial_interval_s=60.0)  # a retry's backoff would hold this test for a minute
    sink = Refusing(settings=SinkConfig(batch_size=10, flush_interval_ms=20), retry=retry,
                    metrics=Metrics(CollectorRegistry()), queue_max_batches=4, dead_letters=letters)
    names = ["a", "b", "bad", "c", "d", "e", "f", "g"]
    refused = []
    sink._write_isolating([Rec(n) for n in names], refused)
    sink._dead_letter(refused)
    assert sink.writes.count(["bad"]) == 1  # tried alone once, not again after a backoff
    assert sorted(n for w in sink.writes if "bad" not in w for n in w) == ["a", "b", "c", "d", "e", "f", "g"]
    [letter] = letters.sent
    assert (letter.reason, letter.attempts, letter.metric) == ("sink_rejected", 1, "pressure")
    assert "value out of range" in letter.error


def test_the_sink_thread_marks_a_write_busy_while_it_runs_and_idle_after():
    """What the daemon's BusyWatch reads: ("write", since) during a write, None once it returned."""
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


class Source(NamedTuple):
    topic: str
    partition: int
    offset: int


class FullStore(TickingSink):
    """A store that refuses every write with out-of-memory until `accept` is set, then takes them."""

    tick_interval_s = None

    def __init__(self, **kw):
        super().__init__(**kw)
        self.accept = threading.Event()

    def write(self, records):
        self.writes.append([r.name for r in records])
        if not self.accept.is_set():
            raise redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")


def test_a_refusing_store_holds_the_batch_shows_blocked_backs_off_and_resumes_on_its_own():
    letters = Letters()
    metrics = Metrics(CollectorRegistry())
    retry = RetryConfig(initial_interval_s=0.02, max_interval_s=0.1, multiplier=2.0, jitter=0.0)
    sink = FullStore(settings=SinkConfig(batch_size=8, flush_interval_ms=20), retry=retry, metrics=metrics,
                     queue_max_batches=4, dead_letters=letters)
    t = threading.Thread(target=sink.run, daemon=True)  # a failed assertion must not leave the test run waiting
    t.start()
    b = Batch([Rec(n, Source("raw", 0, i)) for i, n in enumerate("abcdefgh")], [], {}, 1)
    sink.put(b, threading.Event())
    time.sleep(0.8)
    if b.done.is_set():
        sink.stop()
    assert not b.done.is_set()  # held: the batch is not acknowledged, so its offsets are not committed
    since, message = sink.blocked()
    assert message == "refused: OutOfMemoryError: OOM command not allowed when used memory > 'maxmemory'."
    assert metrics.registry.get_sample_value("pipeline_sink_blocked", {"sink": "ticking"}) == 1
    tries = len(sink.writes)
    assert 6 <= tries <= 14  # backed off to max_interval_s (0.1 s): about 8 tries in 0.8 s, not thousands
    assert all(w == list("abcdefgh") for w in sink.writes)  # never split: a refusal is not a bad record
    sink.accept.set()
    assert b.done.wait(2)
    assert sink.blocked() is None
    assert metrics.registry.get_sample_value("pipeline_sink_blocked", {"sink": "ticking"}) == 0
    assert letters.sent == []
    sink.finish()
    t.join(2)


def test_a_bad_record_is_isolated_and_its_message_dead_lettered_once_for_all_its_refused_readings():
    letters = Letters()
    sink = Refusing(settings=SinkConfig(batch_size=10, flush_interval_ms=20), retry=RetryConfig(),
                    metrics=Metrics(CollectorRegistry()), queue_max_batches=4, dead_letters=letters)
    msg = Source("raw", 1, 42)  # one MQTT message carrying two readings the store refuses
    records = [Rec("a", Source("raw", 1, 40)), Rec("bad", msg, "temperature"), Rec("b", Source("raw", 1, 41)),
               Rec("bad", msg, "humidity")]
    refused = []
    sink._write_isolating(records, refused)
    sink._dead_letter(refused)
    [letter] = letters.sent
    assert letter.source == msg and letter.metric is None
    assert letter.refused == {"temperature": "sink_rejected", "humidity": "sink_rejected"}


def test_a_message_dead_lettered_by_one_sink_is_not_sent_again_by_another():
    from pipeline.config import KafkaConfig
    from pipeline.records import EXHAUSTED, DeadLetter, RawMessage
    from pipeline.sinks.deadletter import DeadLetterWriter

    writer = DeadLetterWriter(KafkaConfig(), "unit", Metrics(CollectorRegistry()))  # produces nothing here
    sent = []
    writer._send = lambda letters, timeout: sent.extend(letters)
    src = RawMessage("t/s1", b"{}", 1.0, topic="raw", partition=0, offset=7)
    letter = lambda sink: DeadLetter(src, "sink_rejected", sink, "refused", EXHAUSTED)  # noqa: E731
    writer.send([letter("postgres")], once_per_message=True)
    writer.send([letter("redis")], once_per_message=True)
    writer.send([letter("postgres")], once_per_message=True)  # the batch written again after a redelivery
    assert [d.stage for d in sent] == ["postgres"]
    writer.send([letter("stage")])  # a stage's letter is not deduplicated
    assert len(sent) == 2
