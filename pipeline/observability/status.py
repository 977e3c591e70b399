"""What a running pipeline tells its dashboard: threads, failures, sinks, the consumer, MQTT, reloads.

The dashboard reads only `PipelineStatus`; the daemon hands it a `LiveStatus`, which asks each component
through its own methods, and tests hand it a fake. Components built late in the start (the consumer, the
bridge, the broker's drop counters) are attached as they come; until then the status says "not started".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from ..records import DeadLetter

DeadLetterListener = Callable[[Sequence[DeadLetter]], None]


@dataclass(frozen=True)
class SinkStatus:
    """One batch consumer (sink or operator runner): batches waiting, its last successful write (epoch s) and,
    while its store is away or refuses writes, since when (epoch s) and the store's message."""

    name: str
    queue_depth: int
    last_success: float | None
    blocked_since: float | None = None
    blocked: str | None = None
    best_effort: bool = False  # fed by its own feed: shown on /ready, never failing it
    lag: int | None = None  # records its feed has not yet had written
    feed: str | None = None


@dataclass(frozen=True)
class ConsumerStatus:
    """The Kafka consumer: started at all, its own verdict (ok, detail), batches in flight, partitions held,
    and holes in a partition's offsets given up on (topic, partition, first, last, missing, attempts)."""

    started: bool
    ok: bool
    detail: str
    in_flight: int = 0
    assigned: int = 0
    gaps: tuple[dict, ...] = ()


@dataclass(frozen=True)
class MqttStatus:
    """The bridge's connection to the broker it reads from."""

    connected: bool
    host: str
    port: int


@dataclass(frozen=True)
class ReloadStatus:
    """The last live reload: why it was refused (None: it was not), and keys that need a restart."""

    last_error: str | None = None
    restart_required: tuple[str, ...] = ()


class PipelineStatus(Protocol):
    """The read interface the dashboard uses; `LiveStatus` is the daemon's."""

    instance_id: str
    started_at: float

    def threads(self) -> dict[str, bool]: ...
    def failures(self) -> list[tuple[str, str]]: ...
    def sinks(self) -> list[SinkStatus]: ...
    def consumer(self) -> ConsumerStatus: ...
    def mqtt(self) -> MqttStatus: ...
    def broker_drops(self) -> dict | None: ...
    def config_reload(self) -> ReloadStatus: ...
    def on_dead_letters(self, listener: DeadLetterListener) -> None: ...
    def mappings(self) -> list[dict]: ...


class LiveStatus:
    """`PipelineStatus` over the daemon's supervisor and components, each asked through its own methods."""

    def __init__(self, instance_id: str, started_at: float, supervisor, sinks: Sequence, config_holder,
                 mqtt_host: str, mqtt_port: int, dead_letter_sink=None, feeds: Sequence = ()):
        self.instance_id = instance_id
        self.started_at = started_at
        self._supervisor = supervisor
        self._sinks = list(sinks)
        self._config = config_holder
        self._mqtt_host, self._mqtt_port = mqtt_host, mqtt_port
        self._dead_letter_sink = dead_letter_sink
        self._feeds = {f.sink.name: f for f in feeds}  # best-effort sinks' feeds, by sink name
        self._source = None
        self._bridge = None
        self._broker_stats = None
        self._mappings = None

    # -- the daemon attaches what it builds during start() --------------------------------------
    def attach_source(self, source) -> None:
        self._source = source

    def attach_bridge(self, bridge) -> None:
        self._bridge = bridge

    def attach_broker_stats(self, broker_stats) -> None:
        self._broker_stats = broker_stats

    def attach_mappings(self, stats) -> None:
        """The main chain's per-mapping counts (pipeline/stages/mapping_stats.py: `snapshot()`)."""
        self._mappings = stats

    # -- PipelineStatus ---------------------------------------------------------------------------
    def threads(self) -> dict[str, bool]:
        return self._supervisor.liveness()

    def failures(self) -> list[tuple[str, str]]:
        return [(where, str(err)) for where, err in self._supervisor.failures()]

    def sinks(self) -> list[SinkStatus]:
        out = []
        for s in self._sinks:
            since, message = s.blocked() or (None, None)
            feed = self._feeds.get(s.name)
            lag, feed_detail = feed.status() if feed is not None else (None, None)
            out.append(SinkStatus(s.name, s.queue_depth(), s.last_success, since, message, best_effort=feed is not None,
                                  lag=lag, feed=feed_detail))
        return out

    def consumer(self) -> ConsumerStatus:
        source = self._source
        if source is None:
            return ConsumerStatus(False, False, "not started")
        ok, detail = source.status()
        gaps = tuple({"topic": g.topic, "partition": g.partition, "first": g.first, "last": g.last,
                      "missing": g.missing, "attempts": g.attempts} for g in source.gaps())
        return ConsumerStatus(True, ok, detail, source.in_flight(), len(source.assigned), gaps)

    def mqtt(self) -> MqttStatus:
        bridge = self._bridge
        return MqttStatus(bridge is not None and bridge.is_connected(), self._mqtt_host, self._mqtt_port)

    def broker_drops(self) -> dict | None:
        return self._broker_stats.status() if self._broker_stats is not None else None

    def mappings(self) -> list[dict]:
        """Per configured mapping: messages, rate, readings per message, text skipped, last refused sample."""
        return self._mappings.snapshot() if self._mappings is not None else []

    def config_reload(self) -> ReloadStatus:
        holder = self._config
        return ReloadStatus(holder.last_reload_error, tuple(holder.restart_required))

    def on_dead_letters(self, listener: DeadLetterListener) -> None:
        """`listener(letters)` with each batch of dead letters once Kafka holds them."""
        if self._dead_letter_sink is not None:
            self._dead_letter_sink.subscribe(listener)
