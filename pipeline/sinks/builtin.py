"""The sinks that come with the pipeline, registered by name (pipeline/sinks/registry.py); all are durable."""
from __future__ import annotations

from . import registry
from .deadletter import DeadLetterSink
from .log_store import LogSink
from .postgres import PostgresSink
from .redis_stream import RedisSink
from .registry import SinkContext

# Today's sinks, in the order a daemon runs them when `sinks.use` is not set.
DEFAULT_USE = ("postgres", "redis", "dead_letter", "logs")


def postgres(ctx: SinkContext) -> PostgresSink:
    """Readings into `measurements`; the window operator listens to its inserts."""
    cfg = ctx.config
    return PostgresSink(cfg.postgres, ctx.secrets.postgres_password, listeners=ctx.insert_listeners,
                        tick_interval_s=cfg.processing.interval_s, partition_interval=cfg.storage.partition_interval,
                        state_idle_s=cfg.limits.state_idle_s, dead_letters=ctx.dead_letters, **ctx.common("postgres"))


def redis(ctx: SinkContext) -> RedisSink:
    """Readings onto the Redis streams."""
    cfg = ctx.config
    return RedisSink(cfg.redis, ctx.secrets.redis_password, state_idle_s=cfg.limits.state_idle_s,
                     dead_letters=ctx.dead_letters, **ctx.common("redis"))


def dead_letter(ctx: SinkContext) -> DeadLetterSink:
    """Dead letters onto their Kafka topics."""
    return DeadLetterSink(ctx.dead_letters, **ctx.common("dead_letter"))


def logs(ctx: SinkContext) -> LogSink:
    """Application logs into PostgreSQL and Redis; the log counter hears what was stored."""
    cfg = ctx.config
    return LogSink(cfg.postgres, ctx.secrets.postgres_password, cfg.redis, ctx.secrets.redis_password,
                   dead_letters=ctx.dead_letters, on_written=ctx.on_logs_written,
                   partition_interval=cfg.storage.partition_interval, **ctx.common("logs"))


for _name, _factory in (("postgres", postgres), ("redis", redis), ("dead_letter", dead_letter), ("logs", logs)):
    registry.register(_name, _factory, durable=True)
