"""The effective detector settings of each (sensor, metric): config `thresholds` and `detection`, merged.

Detectors are those registered (pipeline/registry/detectors.py), each looked up by its rule type name.
A per-sensor entry (`detection.sensors.<id>.metrics.<metric>`) replaces a detector's settings whole;
detectors it does not name are inherited from the metric. One Rules object is built per config and
swapped in whole on reload, so a batch is always judged against one consistent config.
"""
from __future__ import annotations

from typing import Any

from ...config import DetectionConfig, ThresholdRule
from ...registry import detectors as registry


class MetricRules:
    """Settings per detector for one (sensor, metric), in the registry's order; None means the detector is off.
    `history`: some detector given settings keeps the series' history (an array is needed). A detector's
    settings read by its name too (`.threshold`, `.stuck`). `plan`: the evaluator's one call judging a reading
    under these settings, built once on first use (plan.py), so a batch looks nothing up per reading."""

    __slots__ = ("rules", "history", "_names", "plan")

    def __init__(self, rules: tuple = (), names: tuple[str, ...] = (), history: bool = False):
        self.rules, self._names, self.history = rules, names, history
        self.plan = None

    def __getattr__(self, name: str) -> Any:
        try:
            return self.rules[self._names.index(name)]
        except ValueError:
            if name.startswith("_"):
                raise AttributeError(name) from None
            return None  # a detector not registered is not configured either

    def given(self) -> dict[str, Any]:
        return {n: r for n, r in zip(self._names, self.rules) if r is not None}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MetricRules) and self.given() == other.given()

    def __repr__(self) -> str:
        return f"MetricRules({self.given()!r})"


class Rules:
    """Looks up (and caches) the merged settings; immutable once built.

    Sensors without an entry of their own in `detection.sensors` share their metric's settings, cached per
    metric (at most METRIC_CACHE names, then the cache starts over: names come from publishers); only sensors
    with an entry are cached per (sensor, metric), and those entries go with their series when it is idle."""

    METRIC_CACHE = 4096

    def __init__(self, thresholds: dict[str, ThresholdRule], detection: DetectionConfig,
                 specs: list[registry.DetectorSpec] | None = None):
        self.specs = specs if specs is not None else registry.ordered()  # the evaluator's detectors, in order
        self._names = tuple(spec.name for spec in self.specs)
        self._history = tuple(spec.history for spec in self.specs)
        self.thresholds = thresholds
        self.detection = detection
        self._by_metric: dict[str, MetricRules] = {}
        self._cache: dict[tuple[str, str], MetricRules] = {}  # (sensor, metric) of sensors with their own entry
        self._own = frozenset(detection.sensors) if detection.enabled else frozenset()

    def for_metric(self, sensor_id: str, metric: str) -> MetricRules:
        """The settings each detector uses for this sensor's metric."""
        if sensor_id not in self._own:
            found = self._by_metric.get(metric)
            if found is None:
                if len(self._by_metric) >= self.METRIC_CACHE:
                    self._by_metric.clear()
                found = self._by_metric[metric] = self._merge(sensor_id, metric)
            return found
        key = (sensor_id, metric)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = self._merge(sensor_id, metric)
        return found

    def forget_series(self, keys) -> None:
        """Drop the cached settings of these (sensor, metric) series (idle); merged again if they return."""
        for key in keys:
            self._cache.pop(key, None)

    def _merge(self, sensor_id: str, metric: str) -> MetricRules:
        enabled = self.detection.enabled
        base = self.detection.metrics.get(metric) if enabled else None
        sensor = self.detection.sensors.get(sensor_id) if enabled else None
        over = sensor.metrics.get(metric) if sensor is not None else None
        rules = []
        for name in self._names:
            # Thresholds live in `thresholds` and apply with detection off; the others in detection.metrics.
            rule = self.thresholds.get(metric) if name == "threshold" else base.rule(name) if base is not None else None
            if over is not None:
                rule = over.rule(name) if over.rule(name) is not None else rule
            rules.append(rule)
        history = any(r is not None and h for r, h in zip(rules, self._history))
        return MetricRules(tuple(rules), self._names, history)

    def offline_after(self, sensor_id: str) -> float:
        """Seconds of silence before a sensor is offline (0: never)."""
        if not self.detection.enabled:
            return 0.0
        sensor = self.detection.sensors.get(sensor_id)
        if sensor is not None and sensor.offline_after_s is not None:
            return sensor.offline_after_s
        return self.detection.offline_after_s
