"""The window aggregator when a store refuses writes: its windows stay pending for the next tick, logged as a
wait (aggregation_retry_later), not as a failure; a real bug is still logged with its traceback."""
import logging
from types import SimpleNamespace

import pytest
import redis
from prometheus_client import CollectorRegistry
from psycopg import errors as pg

from pipeline.observability.metrics import Metrics
from pipeline.operators.windows.aggregator import WindowAggregator


def guarded(err: Exception, caplog) -> str:
    agg = SimpleNamespace(metrics=Metrics(CollectorRegistry()))

    def fail():
        raise err

    with caplog.at_level(logging.INFO, logger="pipeline.operators.windows.aggregator"):
        WindowAggregator._guard(agg, "close_windows", fail)  # noqa: SLF001 - the one place errors are judged
    assert agg.metrics.registry.get_sample_value("pipeline_aggregation_errors_total") == 1
    return caplog.text


@pytest.mark.parametrize("err", [
    redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
    redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
    pg.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"),
    pg.InsufficientPrivilege("permission denied for table aggregations"),
], ids=lambda e: type(e).__name__)
def test_a_refusing_store_leaves_the_windows_pending_without_a_failure(err, caplog):
    text = guarded(err, caplog)
    assert "event=aggregation_retry_later step=close_windows" in text and "aggregation_failed" not in text


def test_a_bug_is_still_a_failure(caplog):
    text = guarded(KeyError("period"), caplog)
    assert "event=aggregation_failed step=close_windows" in text
