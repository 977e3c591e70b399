"""Per-metric rules: unit conversion, threshold bounds and the detectors (rate, outlier, stuck), with their
per-sensor overrides. Their consistency (min below max, warning within critical) is checked in checks.py."""
from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .base import NonNegFloat, NonNegInt, PositiveFloat, PositiveInt, Section


class UnitRule(Section):
    """Readings of a metric sent in ``unit`` are converted to the canonical unit: value*scale+offset."""

    unit: Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
    scale: float = 1.0
    offset: float = 0.0


class MetricUnits(Section):
    canonical: Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
    convert: tuple[UnitRule, ...] = ()


class Bounds(Section):
    min: float | None = None
    max: float | None = None


class ThresholdRule(Section):
    warning: Bounds = Bounds()
    critical: Bounds = Bounds()
    # An open alert clears only once the value is this far back inside its bound (hysteresis).
    deadband: NonNegFloat = 0.0
    # A value must stay beyond a bound this long (event time) before the alert opens; 0: at once.
    for_s: NonNegFloat = 0.0



Severity = Literal["info", "warning", "critical"]


class RateRule(Section):
    """Largest allowed change per second (absolute), per severity."""

    warning: PositiveFloat | None = None
    critical: PositiveFloat | None = None
    deadband: NonNegFloat = 0.0
    # The change is measured over at least this long, so two readings a millisecond apart do not explode.
    min_interval_s: PositiveFloat = 1.0


class OutlierRule(Section):
    """z-score of a reading against an EWMA mean and deviation of the sensor's metric."""

    z_warning: PositiveFloat | None = None
    z_critical: PositiveFloat | None = None
    alpha: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.05
    min_samples: PositiveInt = 30
    # Floor of the deviation, in the metric's unit: a perfectly flat signal does not turn every tiny change into an outlier.
    min_std: NonNegFloat = 0.0
    deadband: NonNegFloat = 0.5


class StuckRule(Section):
    """The same value (within `tolerance`) `count` times in a row or for `seconds`; 0 turns a limit off."""

    count: NonNegInt = 0
    seconds: NonNegFloat = 0.0
    tolerance: NonNegFloat = 0.0
    severity: Severity = "warning"


class MetricDetection(Section):
    rate: RateRule | None = None
    outlier: OutlierRule | None = None
    stuck: StuckRule | None = None


class MetricOverride(MetricDetection):
    """Per-sensor override: a detector given here replaces the metric's one whole; absent ones are inherited."""

    threshold: ThresholdRule | None = None


class SensorOverride(Section):
    offline_after_s: NonNegFloat | None = None
    metrics: dict[str, MetricOverride] = {}


class DetectionConfig(Section):
    enabled: bool = True
    # No reading from a sensor for this long opens an `offline` alert (0: off).
    offline_after_s: NonNegFloat = 300.0
    offline_severity: Severity = "warning"
    # Per metric: rate of change, statistical outlier, stuck sensor (thresholds live in `thresholds`).
    metrics: dict[str, MetricDetection] = {}
    # Per sensor id: offline_after_s and per-metric detector overrides.
    sensors: dict[str, SensorOverride] = {}
