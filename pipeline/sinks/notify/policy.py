"""Which channel hears of which alert, and when: routing, silencing, renotify and digests. Pure: the time
is passed in, nothing here sends, sleeps or locks (the notifier holds the lock and delivers).

An alert here is its identity (sensor, metric, type), so a reopened alert is the same alert. Within
`renotify_s` of its last notification a repeat of its state (reopened, flapping, not more severe) is
suppressed; a more severe state is news and goes. Every resolution goes, once per alert id.
Per channel, more than `max_alerts` notifications within `window_s` switch the channel to a digest: what
follows is collected and sent as one message when the window has passed; the channel leaves digest mode
after a window in which nothing more came. A digest lists at most `max_listed` alerts (the first of its window);
the rest are counted in `more`.
"""
from __future__ import annotations

import logging
import re
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

from ...config import ChannelConfig, NotificationsConfig

log = logging.getLogger(__name__)

RESOLVED = "resolved"
SEVERITY_RANK = {"warning": 1, "critical": 2}
# A silencer's reason becomes a metric label: anything but a short plain word is counted as `silenced`.
_REASON = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_REMEMBERED = 100_000  # alerts whose last notification is remembered (oldest forgotten first)

Silencer = Callable[[dict, float], "str | None"]


def never_silenced(payload: dict, now: float) -> str | None:
    """The default silencer: nothing is snoozed, acknowledged or in maintenance."""
    return None


@dataclass(slots=True)
class Notice:
    """What one channel is to send: one alert's payload, or several (a digest)."""

    channel: str
    alerts: list[dict]
    digest: bool = False
    window_s: float = 0.0
    more: int = 0  # a digest's alerts beyond those listed: only counted

    @property
    def count(self) -> int:
        """How many alert notifications this notice stands for, listed or not."""
        return len(self.alerts) + self.more


@dataclass(frozen=True, slots=True)
class Route:
    """A channel's routing: severities, and alert types and metrics (empty: all)."""

    channel: str
    severities: frozenset[str]
    types: frozenset[str] = frozenset()
    metrics: frozenset[str] = frozenset()

    @classmethod
    def of(cls, ch: ChannelConfig) -> "Route":
        return cls(ch.name, frozenset(ch.severities), frozenset(ch.types), frozenset(ch.metrics))

    def accepts(self, payload: dict) -> bool:
        metric = payload.get("metric")
        return (payload.get("severity") in self.severities
                and (not self.types or payload.get("type") in self.types)
                and (not self.metrics or metric is None or metric in self.metrics))


@dataclass(slots=True)
class _Digest:
    """A channel's recent sends and, in digest mode, what waits for the digest."""

    recent: deque = field(default_factory=deque)
    pending: list = field(default_factory=list)
    more: int = 0  # collected beyond max_listed: counted, not kept
    due: float | None = None  # in digest mode: when the collected alerts go out


class NotificationPolicy:
    """`decide(payload, now)` -> notices to send now and suppression reasons; `due(channel, now)` -> digests."""

    def __init__(self, routes: Sequence[Route], renotify_s: float, digest_window_s: float, digest_max: int,
                 silenced: Silencer = never_silenced, digest_listed: int = 50):
        self.routes = list(routes)
        self.renotify_s = renotify_s
        self.window_s = digest_window_s
        self.max_alerts = digest_max
        self.max_listed = digest_listed
        self.silenced = silenced
        self._last: OrderedDict[tuple, tuple[float, int]] = OrderedDict()  # alert -> (notified at, severity rank)
        self._resolved: OrderedDict[object, None] = OrderedDict()  # alert ids whose resolution went
        self._digests = {r.channel: _Digest() for r in self.routes}

    @classmethod
    def from_config(cls, cfg: NotificationsConfig, extra: Sequence[Route] = (), silenced: Silencer = never_silenced):
        routes = [Route.of(ch) for ch in cfg.channels] + list(extra)
        return cls(routes, cfg.renotify_s, cfg.digest.window_s, cfg.digest.max_alerts, silenced, cfg.digest.max_listed)

    def decide(self, payload: dict, now: float) -> tuple[list[Notice], str | None]:
        """The notices to send now (digest mode keeps some back) and why nothing goes, if nothing does."""
        reason = self._silence_reason(payload, now)
        if reason is None:
            reason = self._repeat_reason(payload, now)
        if reason is not None:
            return [], reason
        routes = [r for r in self.routes if r.accepts(payload)]
        if not routes:
            return [], "unrouted"
        notices = []
        for route in routes:
            notice = self._admit(route.channel, payload, now)
            if notice is not None:
                notices.append(notice)
        return notices, None

    def due(self, channel: str, now: float, force: bool = False) -> Notice | None:
        """The channel's digest if its window has passed (or `force`, at shutdown); None otherwise."""
        d = self._digests.get(channel)
        if d is None or d.due is None or (now < d.due and not force):
            return None
        if not d.pending:
            d.due = None  # a quiet window: back to one message per alert
            return None
        alerts, more, d.pending, d.more = d.pending, d.more, [], 0
        d.due = None if force else now + self.window_s  # the storm may go on: collect one more window
        d.recent.append(now)
        return Notice(channel, alerts, digest=True, window_s=self.window_s, more=more)

    # -- the steps of decide -------------------------------------------------------------------
    def _silence_reason(self, payload: dict, now: float) -> str | None:
        try:
            reason = self.silenced(payload, now)
        except Exception:  # noqa: BLE001 - a broken silencer must not swallow alerts: notify
            log.exception("event=notification_silencer_failed alert_id=%s", payload.get("alert_id"))
            return None
        if not reason:
            return None
        return reason if isinstance(reason, str) and _REASON.match(reason) else "silenced"

    def _repeat_reason(self, payload: dict, now: float) -> str | None:
        if payload.get("event") == RESOLVED:
            alert_id = payload.get("alert_id")
            if alert_id in self._resolved:
                return "duplicate"
            self._remember(self._resolved, alert_id, None)
            return None
        key = (payload.get("sensor_id"), payload.get("metric"), payload.get("type"))
        rank = SEVERITY_RANK.get(payload.get("severity"), 0)
        last = self._last.get(key)
        if last is not None and now - last[0] < self.renotify_s and rank <= last[1]:
            return "renotify"
        self._remember(self._last, key, (now, rank))
        return None

    @staticmethod
    def _remember(store: OrderedDict, key, value) -> None:
        store[key] = value
        store.move_to_end(key)
        if len(store) > _REMEMBERED:
            store.popitem(last=False)

    def _admit(self, channel: str, payload: dict, now: float) -> Notice | None:
        d = self._digests[channel]
        if d.due is not None:
            self._collect(d, payload)
            return None
        while d.recent and d.recent[0] <= now - self.window_s:
            d.recent.popleft()
        if len(d.recent) >= self.max_alerts:
            self._collect(d, payload)
            d.due = now + self.window_s
            return None
        d.recent.append(now)
        return Notice(channel, [payload])

    def _collect(self, d: _Digest, payload: dict) -> None:
        """Keep the payload for the digest if it is among the first max_listed, else only count it."""
        if len(d.pending) < self.max_listed:
            d.pending.append(payload)
        else:
            d.more += 1
