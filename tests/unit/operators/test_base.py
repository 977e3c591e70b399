"""The operator runner: a fake operator sees batches, durability, ticks, partitions and stop; a transient store
error holds the batch (blocked, retried) instead of ending the thread."""
import threading
import time

import psycopg
from prometheus_client import CollectorRegistry

from pipeline.config import RetryConfig, SinkConfig
from pipeline.observability.metrics import Metrics
from pipeline.operators.base import Operator, OperatorRunner
from pipeline.runtime.batch import Batch


class Doubler(Operator):
    """Takes readings (numbers here), stores their doubles; records which thread ran each hook."""

    name = "doubler"
    tick_interval_s = 0.05

    def __init__(self, refusals: int = 0):
        super().__init__(RetryConfig(initial_interval_s=0.01, max_interval_s=0.05), Metrics(CollectorRegistry()))
        self.refusals = refusals
        self.taken: list[list] = []
        self.stored: list[list] = []
        self.durable_out: list[list] = []
        self.ticks: list[str] = []
        self.partitions: list[tuple[str, set[int]]] = []

    def take(self, batch):
        self.taken.append(list(batch.readings))
        return [2 * r for r in batch.readings]

    def write(self, out):
        if self.refusals:
            self.refusals -= 1
            raise psycopg.OperationalError("connection refused")  # the store is away: transient
        self.stored.append(list(out))

    def durable(self, out):
        self.durable_out.append(list(out))

    def tick(self):
        self.ticks.append(threading.current_thread().name)

    def partitions_assigned(self, partitions):
        self.partitions.append(("assigned", set(partitions)))

    def partitions_revoked(self, partitions):
        self.partitions.append(("revoked", set(partitions)))


def run(op: Operator) -> tuple[OperatorRunner, threading.Thread]:
    runner = OperatorRunner(op, SinkConfig(batch_size=10, flush_interval_ms=20), op.retry, op.metrics, 4)
    runner.start()
    t = threading.Thread(target=runner.run, name=f"sink-{op.name}")
    t.start()
    return runner, t


def test_batches_durable_ticks_partitions_and_stop_reach_the_operator():
    op = Doubler()
    runner, t = run(op)
    try:
        assert runner.name == "doubler" and runner.tick_interval_s == 0.05
        runner.partitions_assigned({0, 1})
        runner.partitions_revoked({1})
        b = Batch([1, 2], [], {("raw", 0): 5}, 1)
        runner.put(b, threading.Event())
        assert b.done.wait(2)  # offsets are committable once the operator stored its output
        time.sleep(0.2)
    finally:
        runner.finish()
        t.join(2)
    assert op.taken == [[1, 2]] and op.stored == [[2, 4]] and op.durable_out == [[2, 4]]
    assert len(op.ticks) >= 2 and set(op.ticks) == {"sink-doubler"}
    assert op.partitions == [("assigned", {0, 1}), ("revoked", {1})]
    runner.stop()
    assert op.stop_event.is_set()  # the operator's own retries end with the runner
    runner.close()


def test_a_transient_store_error_holds_the_batch_and_it_is_stored_once_the_store_is_back():
    op = Doubler(refusals=3)
    runner, t = run(op)
    try:
        b = Batch([3], [], {("raw", 0): 9}, 1)
        runner.put(b, threading.Event())
        assert b.done.wait(3)
        assert t.is_alive() and runner.blocked() is None
    finally:
        runner.finish()
        t.join(2)
    assert op.taken == [[3]]  # judged once, however often its store was retried
    assert op.stored == [[6]] and op.durable_out == [[6]]
    assert op.metrics.registry.get_sample_value("pipeline_retries_total", {"operation": "doubler_write"}) == 3


def test_a_refusing_store_shows_the_runner_as_blocked_while_it_holds():
    op = Doubler(refusals=10 ** 6)
    runner, t = run(op)
    try:
        b = Batch([1], [], {}, 1)
        runner.put(b, threading.Event())
        time.sleep(0.5)
        assert t.is_alive() and not b.done.is_set()
        since, message = runner.blocked()
        assert message.startswith("unreachable") and "connection refused" in message
    finally:
        runner.stop()
        t.join(3)
    assert not t.is_alive() and not b.done.is_set()  # stopped: the batch stays uncommitted
