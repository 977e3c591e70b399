"""The alerts section: how alerts open, resolve and hold while flapping, and where they are delivered."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from ..operators.alerts.cron import Cron, CronError
from .base import Name, NonNegFloat, NonNegInt, PositiveFloat, Section


class WebhookConfig(Section):
    url: Annotated[str, msgspec.Meta(pattern=r"^(https?://.+)?$")] = ""
    timeout_s: PositiveFloat = 5.0
    # Deliveries wait in a bounded queue; when it is full the newest is dropped and counted, never blocking.
    queue_max: Annotated[int, msgspec.Meta(ge=1, le=100000)] = 1000
    # How long one delivery is retried (with backoff) before it is given up and counted as failed.
    max_elapsed_s: PositiveFloat = 60.0


class FlapConfig(Section):
    """An alert that opened and resolved `count` times within `window_s` is held open as flapping (0: off)."""

    count: NonNegInt = 3
    window_s: NonNegFloat = 1800.0


def iso_epoch(text: str) -> float:
    """An ISO-8601 date-time as epoch seconds; without an offset it is UTC."""
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


class MaintenanceWindow(Section):
    """A time during which alerts of some sensors are stored (and flagged) but not notified: planned work,
    a weekly restart. Either `start`/`end` (ISO-8601, once) or `cron` + `duration_s` (recurring)."""

    name: Name
    # Which sensors: a glob on the sensor id (`hall-*`), and/or their location (exact); both given: both must match.
    sensors: str = ""
    location: str = ""
    start: str = ""
    end: str = ""
    # `minute hour day-of-month month day-of-week`, e.g. "0 2 * * 0" (Sundays 02:00) in `timezone`.
    cron: str = ""
    duration_s: Annotated[float, msgspec.Meta(ge=0, le=31 * 86400)] = 0.0
    # The wall clock the cron expression speaks of (IANA name); start/end carry their own offset.
    timezone: str = "UTC"

    def __post_init__(self):
        if not self.sensors and not self.location:
            raise ValueError("needs `sensors` (a glob on the sensor id) and/or `location`")
        once, recurring = bool(self.start or self.end), bool(self.cron)
        if once == recurring:
            raise ValueError("needs either `start` and `end` or `cron` and `duration_s`")
        if once:
            try:
                start, end = iso_epoch(self.start), iso_epoch(self.end)
            except ValueError:
                raise ValueError("`start` and `end` must be ISO-8601 date-times") from None
            if start >= end:
                raise ValueError("`start` must be before `end`")
        else:
            try:
                Cron.parse(self.cron)
            except CronError as err:
                raise ValueError(f"cron: {err}") from None
            if self.duration_s <= 0:
                raise ValueError("a `cron` window needs `duration_s` > 0")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {self.timezone!r}") from None


class AlertsConfig(Section):
    enabled: bool = True
    # An open alert resolves after this many consecutive readings inside its bound by the deadband ...
    clear_readings: NonNegInt = 3
    # ... or after it has been inside that long (0: off). Both 0: the first clear reading resolves it.
    clear_seconds: NonNegFloat = 0.0
    flap: FlapConfig = FlapConfig()
    webhook: WebhookConfig = WebhookConfig()
    # Alerts of matching sensors during a window are stored (alert_events.silenced) but not notified.
    maintenance: tuple[MaintenanceWindow, ...] = ()
