"""Alert messages in words an operator reads: sensor, metric, value, bound and time (UTC)."""
from __future__ import annotations

from datetime import datetime, timezone

from ...registry import detectors as registry
from .lifecycle import ESCALATED, FLAPPING, OPENED, Transition


def when(ts: float) -> str:
    """Epoch seconds as an operator reads them: '2025-10-09 08:53:20 UTC'."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _subject(t: Transition) -> str:
    a = t.alert
    return f"{a.metric} of sensor {a.sensor_id}" if a.metric else f"sensor {a.sensor_id}"


def message(t: Transition) -> str:
    """The sentence stored with the alert (opened/escalated) or its resolution event."""
    a = t.alert
    subject = _subject(t)
    if t.event in (OPENED, ESCALATED):
        # Each detector declares how its detail reads (pipeline/registry/detectors.py): after "<subject> is
        # <value>," (value_first), or saying what happened, then ", now <value>" (value_after) or not.
        spec = registry.get(a.type)
        if spec is not None and spec.value_first and t.value is not None:
            text = f"{subject} is {t.value:g}, {t.detail}"
        else:
            now = spec is not None and spec.value_after and t.value is not None
            text = f"{subject} {t.detail}" + (f", now {t.value:g}" if now else "")
        prefix = t.severity.capitalize() if t.event == OPENED else f"Escalated from {t.previous} to {t.severity}"
        return f"{prefix}: {text}, at {when(t.at)}."
    if t.event == FLAPPING:
        return (f"Flapping: {subject} {t.detail} ({a.type}, {a.severity}); held open and not announced again "
                f"until quiet, at {when(t.at)}.")
    value = f" ({t.value:g})" if t.value is not None else ""
    back = "reports again" if a.type == "offline" else f"is back to normal{value}"
    return f"Resolved: {subject} {back} at {when(t.at)}; {a.type} alert was {a.severity} since {when(a.opened_at)}."
