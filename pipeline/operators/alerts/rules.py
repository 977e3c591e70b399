"""The effective detector settings of each (sensor, metric): config `thresholds` and `detection`, merged.

A per-sensor entry (`detection.sensors.<id>.metrics.<metric>`) replaces a detector's settings whole;
detectors it does not name are inherited from the metric. One Rules object is built per config and
swapped in whole on reload, so a batch is always judged against one consistent config.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...config import DetectionConfig, OutlierRule, RateRule, StuckRule, ThresholdRule


@dataclass(frozen=True, slots=True)
class MetricRules:
    """Settings per detector for one (sensor, metric); None means the detector is off."""

    threshold: ThresholdRule | None = None
    rate: RateRule | None = None
    outlier: OutlierRule | None = None
    stuck: StuckRule | None = None


class Rules:
    """Looks up (and caches) the merged settings; immutable once built.

    Sensors without an entry of their own in `detection.sensors` share their metric's settings, cached per
    metric (at most METRIC_CACHE names, then the cache starts over: names come from publishers); only sensors
    with an entry are cached per (sensor, metric), and those entries go with their series when it is idle."""

    METRIC_CACHE = 4096

    def __init__(self, thresholds: dict[str, ThresholdRule], detection: DetectionConfig):
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
        threshold = self.thresholds.get(metric)
        if not self.detection.enabled:
            return MetricRules(threshold=threshold)
        base = self.detection.metrics.get(metric)
        rate, outlier, stuck = (base.rate, base.outlier, base.stuck) if base is not None else (None, None, None)
        sensor = self.detection.sensors.get(sensor_id)
        over = sensor.metrics.get(metric) if sensor is not None else None
        if over is not None:
            threshold = over.threshold if over.threshold is not None else threshold
            rate = over.rate if over.rate is not None else rate
            outlier = over.outlier if over.outlier is not None else outlier
            stuck = over.stuck if over.stuck is not None else stuck
        return MetricRules(threshold, rate, outlier, stuck)

    def offline_after(self, sensor_id: str) -> float:
        """Seconds of silence before a sensor is offline (0: never)."""
        if not self.detection.enabled:
            return 0.0
        sensor = self.detection.sensors.get(sensor_id)
        if sensor is not None and sensor.offline_after_s is not None:
            return sensor.offline_after_s
        return self.detection.offline_after_s
