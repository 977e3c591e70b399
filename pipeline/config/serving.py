"""The dashboard section: the embedded web server and what it shows."""
from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

import msgspec

from .base import Name, NonNegInt, PositiveFloat, PositiveInt, Section


class DashboardConfig(Section):
    enabled: bool = True
    host: Name = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080  # 0: any free port (tests)
    # Also ask for DASHBOARD_TOKEN on read-only pages and /metrics (mutating endpoints always need it). Implied
    # when `host` is not a loopback address: whoever reaches the port must not read the pipeline's data unasked.
    require_token_for_reads: bool = False
    # Host header names accepted besides localhost, 127.0.0.1, ::1, `host` and this machine's hostname (and any
    # IP address, which DNS rebinding cannot forge); others get 400. "*" (or ["*"]) turns the check off.
    allowed_hosts: Literal["*"] | tuple[Name, ...] = ()
    # Requests answered at once: a fixed pool, so a flood queues instead of starting a thread per connection.
    threads: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    # Open client connections at most; beyond it new ones wait in the listen backlog until one closes.
    connection_limit: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 100
    # A connection idle this long (no request in progress) is closed, so idle sockets cannot pin the limit.
    channel_timeout_s: PositiveInt = 30
    # Larger request bodies get 413 before the app sees them: the only write (resolve an alert) has none.
    max_request_body_bytes: PositiveInt = 65536
    # Larger request headers get 431: room for a browser's cookies and an Authorization header, not for a flood.
    max_request_header_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 32768
    # Dependency probes (Kafka metadata, PostgreSQL and Redis pings) are reused for this long.
    probe_cache_s: PositiveFloat = 2.0
    # /ready fails for a sink that has work waiting but no successful write for this long.
    stale_write_after_s: PositiveFloat = 60.0
    # /ready fails when the consumer is further behind than this many messages (0: never).
    ready_max_consumer_lag: NonNegInt = 0
    # Seconds of per-second throughput and latency samples kept for the live charts.
    history_s: Annotated[int, msgspec.Meta(ge=10, le=3600)] = 300
    # A trend with no rows in `aggregations` is computed from `measurements` for ranges up to this long.
    raw_fallback_max_range_s: PositiveInt = 21600


def is_loopback_host(host: str) -> bool:
    """True when `host` (dashboard.host) only listens on this machine: a loopback address or `localhost`.
    Any other name counts as reachable from elsewhere, since what it resolves to can change."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def reads_need_token(cfg: DashboardConfig) -> bool:
    """Whether pages, the JSON API and /metrics ask for DASHBOARD_TOKEN: on request, or beyond loopback."""
    return cfg.require_token_for_reads or not is_loopback_host(cfg.host)

