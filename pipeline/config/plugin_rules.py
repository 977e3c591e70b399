"""Detector sections of plug-ins (pipeline/registry/detectors.py): converted by the schema each declares beside
its code, before the whole tree is converted, so an error names the key like any other."""
from __future__ import annotations

from typing import Any

import msgspec

from ..registry import detectors
from .errors import ConfigError, describe_validation_error
from .metric_rules import MetricOverride

_OWN = frozenset(MetricOverride.__struct_fields__)


def lift_plugin_rules(tree: dict) -> dict:
    """`tree` with each plug-in detector's section of detection.metrics.<metric> and
    detection.sensors.<id>.metrics.<metric> converted and moved under that entry's `plugins` (a copy: the
    caller's tree is not changed). Unknown names are left for the whole-tree conversion to refuse."""
    detection = tree.get("detection")
    if not isinstance(detection, dict):
        return tree
    detection = dict(detection)
    if isinstance(detection.get("metrics"), dict):
        detection["metrics"] = _lift_metrics("detection.metrics", detection["metrics"])
    sensors = detection.get("sensors")
    if isinstance(sensors, dict):
        sensors = dict(sensors)
        for sensor, override in sensors.items():
            if isinstance(override, dict) and isinstance(override.get("metrics"), dict):
                sensors[sensor] = {**override, "metrics": _lift_metrics(f"detection.sensors.{sensor}.metrics",
                                                                         override["metrics"])}
        detection["sensors"] = sensors
    return {**tree, "detection": detection}


def _lift_metrics(where: str, metrics: dict) -> dict:
    out = {}
    for metric, entry in metrics.items():
        if isinstance(entry, dict):
            if "plugins" in entry:
                raise ConfigError(f"{where}.{metric}.plugins: unknown key")
            plugins: dict[str, Any] = {}
            kept = {}
            for name, section in entry.items():
                spec = detectors.get(name) if name not in _OWN else None
                if spec is None:
                    kept[name] = section
                    continue
                plugins[name] = _convert(f"{where}.{metric}.{name}", spec, section)
            entry = {**kept, "plugins": plugins} if plugins else kept
        out[metric] = entry
    return out


def _convert(where: str, spec: detectors.DetectorSpec, section: Any) -> Any:
    try:
        rule = msgspec.convert(section if section is not None else {}, spec.schema, strict=False)
    except msgspec.ValidationError as err:
        raise ConfigError(f"{where}.{describe_validation_error(err)}".replace(".: ", ": ")) from None
    if spec.check is not None:
        try:
            spec.check(where, rule)
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None
    return rule
