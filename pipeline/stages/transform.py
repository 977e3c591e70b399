"""Transform stage: unit normalisation to each metric's canonical unit (config `units`)."""
from __future__ import annotations

import math

from ..config import MetricUnits
from ..records import Invalid, Reading
from ..runtime.stage import RecordStage


class NormalizeUnits(RecordStage):
    """Reading -> Reading in the canonical unit; an unknown unit for a configured metric is refused."""

    name = "transform"
    accepts = Reading

    def __init__(self, units: dict[str, MetricUnits]):
        self.rules = {
            metric: (spec.canonical, {r.unit: (r.scale, r.offset) for r in spec.convert})
            for metric, spec in units.items()
        }

    def process(self, r: Reading) -> list[Reading]:
        if r.unit is None:
            return [r]
        rule = self.rules.get(r.metric)
        if rule is None:
            return [r]  # no canonical unit configured: keep the value as sent
        canonical, conversions = rule
        if r.unit != canonical:
            conv = conversions.get(r.unit)
            if conv is None:
                raise Invalid("unknown_unit", f"{r.metric} in {r.unit!r}; known: {canonical}, {', '.join(conversions)}")
            value = r.value * conv[0] + conv[1]
            if not math.isfinite(value):
                # 1.7e308 kPa is a finite number but no finite hPa: stored, it would become `Infinity` in the
                # API, which no JSON parser accepts.
                raise Invalid("value_not_finite", f"{r.metric} {r.value!r} {r.unit} is {value} {canonical}")
            r.value = value
            r.unit = canonical
        return [r]
