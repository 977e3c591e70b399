"""Sinks by name: each backend registers a factory and says whether Kafka commits wait for it.

A *durable* sink holds the commit: a batch's offsets are committed only once it stored the batch (PostgreSQL,
Redis, dead letters, logs). A *best-effort* sink does not: it reads the raw topic through a feed of its own
(pipeline/ingest/sink_feed.py) whose committed offsets are its checkpoint, so it may batch for minutes (a file or
object-storage sink) and catches up after a stop or a crash. `sinks.use` in the config
names the sinks a daemon runs, in order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..config import Config, Secrets, SinkConfig


@dataclass(frozen=True)
class SinkContext:
    """What a factory may use: the config, secrets, metrics, the dead-letter writer and the wiring's hooks."""

    config: Config
    secrets: Secrets
    metrics: object
    dead_letters: object
    # Listeners told of the PostgreSQL sink's inserts (the window operator), and who hears of stored logs.
    insert_listeners: tuple = ()
    on_logs_written: Callable | None = None
    hooks: dict = field(default_factory=dict)

    def common(self, name: str) -> dict:
        """The batching runner's arguments every sink takes: its section of `sinks`, retry, metrics, queue size."""
        cfg = self.config
        return dict(settings=getattr(cfg.sinks, name, None) or SinkConfig(), retry=cfg.retry, metrics=self.metrics,
                    queue_max_batches=cfg.processing.queue_max_batches)


@dataclass(frozen=True)
class SinkSpec:
    """A registered sink: its name, its factory and whether commits wait for it."""

    name: str
    factory: Callable[[SinkContext], object]
    durable: bool = True


_REGISTRY: dict[str, SinkSpec] = {}


def register(name: str, factory: Callable[[SinkContext], object], durable: bool = True) -> SinkSpec:
    """Register (or replace) the sink `name`; returns its spec."""
    spec = SinkSpec(name, factory, durable)
    _REGISTRY[name] = spec
    return spec


def unregister(name: str) -> None:
    """Forget the sink `name` (a test's own sink, once the test ends)."""
    _REGISTRY.pop(name, None)


def spec(name: str) -> SinkSpec:
    """The spec registered as `name`; an unknown name is refused with the config key named."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"sinks.use: unknown sink {name!r} (registered: {', '.join(sorted(_REGISTRY))})") from None


def names() -> list[str]:
    """Every registered sink's name."""
    return sorted(_REGISTRY)


def build(ctx: SinkContext, use) -> list:
    """The sinks `use` names, in order, each made by its factory and marked durable or best-effort."""
    sinks = []
    for name in use:
        s = spec(name)
        sink = s.factory(ctx)
        sink.durable = s.durable
        sinks.append(sink)
    return sinks
