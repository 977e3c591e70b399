"""The alerts section: how alerts open, resolve and hold while flapping, and where they are delivered."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Literal, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from .cron import Cron, CronError
from .base import Name, NonNegFloat, NonNegInt, PositiveFloat, PositiveInt, Section
from .errors import ConfigError
from .secret import Secret

# A channel's name is a metric label and appears in dead letters: short, plain, chosen by the operator.
ChannelName = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]
EnvName = Annotated[str, msgspec.Meta(pattern=r"^[A-Z_][A-Z0-9_]{0,99}$")]


class WebhookConfig(Section):
    # Kept for existing configs: a non-empty url becomes the notification channel `webhook` (JSON, all
    # severities). The url lives in config.yaml here; new channels take theirs from the environment.
    url: Annotated[str, msgspec.Meta(pattern=r"^(https?://.+)?$")] = ""
    timeout_s: PositiveFloat = 5.0
    # Deliveries wait in a bounded queue; when it is full the newest is dropped and counted, never blocking.
    queue_max: Annotated[int, msgspec.Meta(ge=1, le=100000)] = 1000
    # How long one delivery is retried (with backoff) before it is given up and counted as failed.
    max_elapsed_s: PositiveFloat = 60.0


class ChannelConfig(Section):
    """One notification channel: where (a URL from the environment) and which alerts (routing)."""

    name: ChannelName
    # The variable holding the channel's URL (apprise form, e.g. slack://..., mailtos://..., or http(s)://
    # for our own signed JSON webhook): URLs carry tokens and passwords, so never config.yaml.
    url_env: EnvName
    # Routing: an alert goes to this channel only if its severity is listed ...
    severities: tuple[Literal["warning", "critical"], ...] = ("warning", "critical")
    # ... and its type (threshold, rate, outlier, stuck, offline, ...) is listed (empty: every type) ...
    types: tuple[str, ...] = ()
    # ... and its metric is listed (empty: every metric; alerts without a metric, such as offline, pass).
    metrics: tuple[str, ...] = ()


class DigestConfig(Section):
    """More than `max_alerts` notifications for one channel within `window_s`: the rest go out as one digest."""

    window_s: PositiveFloat = 60.0
    max_alerts: PositiveInt = 10
    # Alerts listed in one digest; the rest of its window are only counted ("and N more"), so a storm of any
    # size is one message of bounded size, and the notifier holds at most this many payloads per channel.
    max_listed: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 50


class NotificationsConfig(Section):
    channels: tuple[ChannelConfig, ...] = ()
    # At most one notification per alert (sensor, metric, type) per this many seconds: a repeat of its state
    # (reopened, flapping, not more severe) inside the interval is suppressed and counted. Resolutions always go.
    renotify_s: NonNegFloat = 3600.0
    digest: DigestConfig = DigestConfig()
    # One delivery (connect, send and read together) is cut at this deadline, however slowly a server answers.
    timeout_s: PositiveFloat = 10.0
    # A delivery is retried with backoff this long, then dead-lettered (notification_failed) and counted.
    max_elapsed_s: PositiveFloat = 60.0
    # Per channel: deliveries wait in a bounded queue; when it is full the newest is dropped and counted.
    queue_max: Annotated[int, msgspec.Meta(ge=1, le=100000)] = 1000


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
    # Notification channels (docs/operations.md, "Notifications"): email, Slack, Teams, Telegram, JSON webhook.
    notifications: NotificationsConfig = NotificationsConfig()


# The channel the legacy alerts.webhook.url becomes (so that name is reserved while the url is set).
LEGACY_WEBHOOK_CHANNEL = "webhook"


def channel_urls(alerts: AlertsConfig, env: Mapping[str, str]) -> dict[str, Secret]:
    """Each channel's URL from its environment variable (a missing one is a config error naming the key,
    never the value); the legacy alerts.webhook.url as the channel `webhook`."""
    urls = {}
    for i, ch in enumerate(alerts.notifications.channels):
        value = env.get(ch.url_env, "").strip()
        if not value:
            raise ConfigError(f"alerts.notifications.channels[{i}].url_env: environment variable {ch.url_env} "
                              f"(channel {ch.name}) is not set")
        urls[ch.name] = Secret(value)
    if alerts.webhook.url:
        urls[LEGACY_WEBHOOK_CHANNEL] = Secret(alerts.webhook.url)
    return urls


def check_notifications(alerts: AlertsConfig) -> None:
    """Channel names are unique (they label metrics and dead letters); `webhook` is taken by alerts.webhook.url."""
    seen: set[str] = set()
    for i, ch in enumerate(alerts.notifications.channels):
        if ch.name in seen or (ch.name == LEGACY_WEBHOOK_CHANNEL and alerts.webhook.url):
            raise ConfigError(f"alerts.notifications.channels[{i}].name: {ch.name!r} is used twice"
                              + (" (alerts.webhook.url is the channel `webhook`)" if ch.name == LEGACY_WEBHOOK_CHANNEL else ""))
        seen.add(ch.name)
