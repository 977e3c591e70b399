"""Transform stage: unit normalisation to each metric's canonical unit (config `units`)."""
from __future__ import annotations

from ..config import MetricUnits
from ..records import Invalid, Reading


class NormalizeUnits:
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
            r.value = r.value * conv[0] + conv[1]
            r.unit = canonical
        return [r]
