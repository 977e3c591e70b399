"""The runner of a format's stateful operator (pipeline/registry/formats.py: `Format.operator`).

It is a stage of the main chain, right after decoding, so the operator runs on the consumer thread, in message
order, before the batch is handed to the sinks: what it makes durable there is durable before the batch's
offsets can be committed. The consumer tells it its partitions (assigned and revoked, from the rebalance
callbacks or the single-instance assignment); it hands them on. The runner times the operator, and keeps a
failed partition hand-off from breaking the rebalance (logged; the operator starts from what it has).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from ..config import RetryConfig
from ..clients.errors import is_transient
from .retry import Stopped, retry_call

log = logging.getLogger(__name__)


class OperatorStopped(BaseException):
    """The daemon stopped while an operator waited for its store: the batch must not go on (its records would be
    dead letters, its offsets committed). Not an Exception, so the chain does not refuse the records one by one:
    the consumer thread ends, nothing of the batch is committed, and Kafka delivers it again after the restart."""


class FormatOperatorStage:
    """A format operator as a stage (`accepts`: the records its decoder makes; others pass unchanged)."""

    def __init__(self, format_name: str, operator: Any, metrics: Any):
        self.name = f"{format_name}_operator"
        self.operator = operator
        self.accepts = operator.accepts
        self._seconds = metrics.format_operator_seconds.labels(format_name)

    def process_batch(self, items: list, refused: Any) -> list:
        started = time.perf_counter()
        try:
            return self.operator.process_batch(items, refused)
        except Stopped as err:
            log.warning("event=format_operator_stopped operator=%s messages=%d note=batch_not_committed_read_again_"
                        "after_restart", self.name, len(items))
            raise OperatorStopped(self.name) from err
        finally:
            self._seconds.observe(time.perf_counter() - started)

    def start(self) -> None:
        self.operator.start()

    def partitions_assigned(self, partitions: set[int]) -> None:
        self.operator.partitions_assigned(partitions)

    def partitions_revoked(self, partitions: set[int]) -> None:
        self.operator.partitions_revoked(partitions)

    def close(self) -> None:
        try:
            self.operator.close()
        except Exception:  # noqa: BLE001 - closing must not stop the shutdown
            log.exception("event=format_operator_close_failed operator=%s", self.name)


class SkipOperatorRecords:
    """In a best-effort sink's feed (its own chain, without the operators, whose state is the main consumer's):
    records only a format operator reads are taken and not passed on (the feed does not store those formats)."""

    name = "format_operator_skip"

    def __init__(self, types: tuple[type, ...]):
        self.accepts = types

    def process_batch(self, items: list, refused: Any) -> list:
        return []


def retrying(policy: RetryConfig, stop: threading.Event, metrics: Any) -> Callable[[Callable[[], Any], str], Any]:
    """(fn, operation) -> fn(), transient errors (a store away) retried until `stop`: the operator's `retrying`."""

    def call(fn: Callable[[], Any], operation: str) -> Any:
        return retry_call(fn, operation=operation, policy=policy, is_transient=is_transient, stop=stop,
                          on_retry=lambda *_: metrics.retries.labels(operation).inc())

    return call
