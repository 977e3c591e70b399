"""Sinks by name: factories registered and selected by `sinks.use`; a best-effort sink keeps its own checkpoint and
never counts among a batch's holders."""
import threading

import pytest
from prometheus_client import CollectorRegistry

from pipeline.config import RetryConfig, Secrets, SinkConfig, parse
from pipeline.observability.metrics import Metrics
from pipeline.runtime.batch import Batch
from pipeline.sinks import builtin, registry
from pipeline.sinks.base import BatchingSink


class ListSink(BatchingSink):
    name = "list"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.written: list = []
        self.checkpoints: list = []

    def select(self, batch):
        return batch.readings

    def write(self, records):
        self.written.extend(records)

    def after_write(self, records):
        pass

    def checkpoint(self, offsets):
        self.checkpoints.append(dict(offsets))


def list_sink(**_):
    return ListSink(settings=SinkConfig(batch_size=100, flush_interval_ms=10), retry=RetryConfig(),
                    metrics=Metrics(CollectorRegistry()), queue_max_batches=1)


@pytest.fixture
def registered():
    registry.register("list", lambda ctx: list_sink(), durable=False)
    yield
    registry.unregister("list")


def ctx():
    return registry.SinkContext(parse({}, {}), Secrets.from_env({}), Metrics(CollectorRegistry()), None)


def test_the_defaults_are_todays_sinks_in_order():
    assert parse({}, {}).sinks.use == builtin.DEFAULT_USE == ("postgres", "redis", "dead_letter", "logs")
    assert set(builtin.DEFAULT_USE) <= set(registry.names())
    assert all(registry.spec(name).durable for name in builtin.DEFAULT_USE)


def test_an_unknown_name_is_refused_with_the_key_named():
    with pytest.raises(ValueError, match=r"sinks\.use: unknown sink 'nowhere'"):
        registry.build(ctx(), ["nowhere"])


def test_a_best_effort_sink_stores_its_checkpoint_and_marks_its_batches_written(registered):
    [sink] = registry.build(ctx(), ["list"])
    assert sink.durable is False
    # Its feed's batches, one sink each; the first is a full write (100 records), which fills the queue.
    first = Batch([f"r{i}" for i in range(100)], [], {("raw", 0): 10, ("raw", 1): 4}, sinks=1)
    later = Batch(["r100"], [], {("raw", 0): 12}, sinks=1)
    assert sink.offer(first) and sink.offer(later, timeout=1.0) is False  # a queue like any sink's: back-pressure
    sink.finish()
    t = threading.Thread(target=sink.run)
    t.start()
    t.join(5)
    assert sink.written == [f"r{i}" for i in range(100)]
    assert sink.checkpoints[-1] == {("raw", 0): 10, ("raw", 1): 4}
    assert first.done.is_set() and not later.done.is_set()  # the feed commits only what the sink wrote
