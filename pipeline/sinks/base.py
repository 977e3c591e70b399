"""The base of every sink: the shared batching run loop (pipeline/runtime/batching.py) under the sink's name."""
from __future__ import annotations

from ..runtime.batching import BatchingRunner

__all__ = ["BatchingSink"]


class BatchingSink(BatchingRunner):
    """Base class of sinks; subclasses set `name` and implement select/write/is_transient (and start/close)."""

    name = "sink"
