"""The alerts section: how alerts open, resolve and hold while flapping, and where they are delivered."""
from __future__ import annotations

from typing import Annotated

import msgspec

from .base import NonNegFloat, NonNegInt, PositiveFloat, Section


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


class AlertsConfig(Section):
    enabled: bool = True
    # An open alert resolves after this many consecutive readings inside its bound by the deadband ...
    clear_readings: NonNegInt = 3
    # ... or after it has been inside that long (0: off). Both 0: the first clear reading resolves it.
    clear_seconds: NonNegFloat = 0.0
    flap: FlapConfig = FlapConfig()
    webhook: WebhookConfig = WebhookConfig()
