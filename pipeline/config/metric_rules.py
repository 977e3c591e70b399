"""Per-metric rules: unit conversion, threshold bounds and the detectors (rate, outlier, stuck), with their
per-sensor overrides. Their consistency (min below max, warning within critical) is checked in checks.py."""
from __future__ import annotations

from typing import Annotated, Any, Literal

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
    # Every detector has `for_s` with this meaning.
    for_s: NonNegFloat = 0.0



Severity = Literal["info", "warning", "critical"]


class RateRule(Section):
    """Largest allowed slope per second (absolute), per severity: the least-squares slope of the readings of
    the last `window_s` seconds, so the noise between two consecutive readings does not count as a change."""

    warning: PositiveFloat | None = None
    critical: PositiveFloat | None = None
    deadband: NonNegFloat = 0.0
    window_s: PositiveFloat = 60.0
    # No verdict until the window holds this many readings spanning this long: a slope of a few points is noise.
    min_samples: Annotated[int, msgspec.Meta(ge=2)] = 20
    min_span_s: NonNegFloat = 30.0
    # Readings kept per series (memory bound); a faster sensor's window is cut to its latest max_samples.
    max_samples: Annotated[int, msgspec.Meta(ge=2, le=100000)] = 600
    for_s: NonNegFloat = 0.0


class OutlierRule(Section):
    """z-score of a reading against an EWMA mean and deviation of the sensor's metric."""

    z_warning: PositiveFloat | None = None
    z_critical: PositiveFloat | None = None
    alpha: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.05
    min_samples: PositiveInt = 30
    # Floor of the deviation, in the metric's unit: a perfectly flat signal does not turn every tiny change into an outlier.
    min_std: NonNegFloat = 0.0
    deadband: NonNegFloat = 0.5
    for_s: NonNegFloat = 0.0


class StuckRule(Section):
    """The same value (within `tolerance`) `count` times in a row or for `seconds`, or a run of repeats whose
    chance on the series' own normal data is below `repeat_chance`; 0 turns a limit off."""

    count: NonNegInt = 0
    seconds: NonNegFloat = 0.0
    # The learned limit: each series' rate of exact repeats is learned from its runs, and a run of r repeats
    # is stuck once rate**r <= repeat_chance (a per-reading false-alarm budget), but never before
    # `min_count` readings: a sensor that rarely repeats is caught in a few readings, a coarse one that
    # repeats for minutes is not called stuck for doing so.
    repeat_chance: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.0
    min_count: Annotated[int, msgspec.Meta(ge=2)] = 3
    tolerance: NonNegFloat = 0.0
    severity: Severity = "warning"
    for_s: NonNegFloat = 0.0


class MetricDetection(Section):
    """The detectors of one metric by rule type name: the pipeline's own as fields, plug-ins (registered in
    pipeline/registry/detectors.py) in `plugins`, converted by their own schema (plugin_rules.py)."""

    rate: RateRule | None = None
    outlier: OutlierRule | None = None
    stuck: StuckRule | None = None
    plugins: dict[str, Any] = {}  # filled from the plug-ins' own keys, never written in config

    def rule(self, name: str) -> Any:
        """The settings of detector `name` here, None if not given."""
        if name in self.__struct_fields__ and name != "plugins":
            return getattr(self, name)
        return self.plugins.get(name)


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
