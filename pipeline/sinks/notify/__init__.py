"""Alert notifications: policy.py decides (routing, silencing, renotify, digest), channels.py sends (our signed
JSON webhook, apprise for email, Slack, Teams, Telegram), http.py is the hardened POST, notifier.py the runner."""
from .notifier import AlertNotifier, build_notifier
from .policy import Notice, NotificationPolicy, Route, never_silenced

__all__ = ["AlertNotifier", "Notice", "NotificationPolicy", "Route", "build_notifier", "never_silenced"]
