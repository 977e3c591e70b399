"""The dashboard section: the embedded web server and what it shows."""
from __future__ import annotations

from typing import Annotated

import msgspec

from .base import Name, NonNegInt, PositiveFloat, PositiveInt, Section


class DashboardConfig(Section):
    enabled: bool = True
    host: Name = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080  # 0: any free port (tests)
    # Also ask for DASHBOARD_TOKEN on read-only pages and /metrics (mutating endpoints always need it).
    require_token_for_reads: bool = False
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
