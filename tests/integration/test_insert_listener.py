"""The PostgreSQL sink's insert hook against a real database: a listener sees the rows really inserted inside
the write's transaction (and again after the commit); a listener's error rolls the rows back."""
from __future__ import annotations

import time

import pytest

from pipeline.records import Reading
from pipeline.sinks.postgres import PostgresSink


class Listener:
    """Counts, inside the transaction, the stored rows it is told of; records what it hears after the commit."""

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.in_transaction: list[tuple[list, int]] = []
        self.committed_calls: list[tuple[int, list, object]] = []

    def start(self, pool) -> None:
        pass

    def stage(self, cur, records, inserted):
        visible = cur.execute("SELECT count(*) FROM measurements").fetchone()[0]
        self.in_transaction.append((sorted(inserted), visible))
        if self.fail:
            raise RuntimeError("listener failed")
        return "staged"

    def committed(self, records, inserted, staged) -> None:
        self.committed_calls.append((len(records), sorted(inserted), staged))

    def tick(self) -> None:
        pass

    def partitions_assigned(self, partitions) -> None:
        pass

    def partitions_revoked(self, partitions) -> None:
        pass

    def close(self) -> None:
        pass


def make_sink(env, listener: Listener) -> PostgresSink:
    settings = env.migrate(env.settings())
    cfg = settings.config
    sink = PostgresSink(cfg.postgres, settings.secrets.postgres_password, settings=cfg.sinks.postgres, retry=cfg.retry,
                        metrics=env.metrics(), queue_max_batches=1, listeners=[listener])
    sink.start()
    return sink


def test_a_listener_sees_only_the_rows_really_inserted_inside_the_transaction_then_after_the_commit(env):
    listener = Listener()
    sink = make_sink(env, listener)
    try:
        t = float(int(time.time()))
        first = [Reading("hook-1", "sensor", None, "temperature", 21.5, t, t)]
        assert sink.write(first) == 1
        sink.after_write(first)
        again = first + [Reading("hook-1", "sensor", None, "temperature", 22.0, t + 1, t + 1)]
        assert sink.write(again) == 1  # the first is a redelivery: skipped, not told
        sink.after_write(again)
    finally:
        sink.close()
    us = round(t * 1_000_000)
    assert listener.in_transaction == [([("hook-1", "temperature", 21.5, us)], 1),  # visible in its transaction
                                       ([("hook-1", "temperature", 22.0, us + 1_000_000)], 2)]
    assert listener.committed_calls == [(1, [("hook-1", "temperature", 21.5, us)], "staged"),
                                        (2, [("hook-1", "temperature", 22.0, us + 1_000_000)], "staged")]


def test_a_listener_error_rolls_the_rows_back_and_nothing_is_told_as_committed(env):
    listener = Listener(fail=True)
    sink = make_sink(env, listener)
    try:
        t = time.time()
        readings = [Reading("hook-2", "sensor", None, "temperature", 20.0, t, t)]
        with pytest.raises(RuntimeError, match="listener failed"):
            sink.write(readings)
        sink.after_write(readings)
    finally:
        sink.close()
    assert [visible for _rows, visible in listener.in_transaction] == [1]  # the row was there, in the transaction
    assert env.query("SELECT count(*) FROM measurements") == [(0,)]  # rolled back with the listener's error
    assert listener.committed_calls == []
