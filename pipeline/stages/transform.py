"""Transform stage: unit normalisation to each metric's canonical unit (config `units`).

A `units` entry covers the metric of its name and every metric whose name ends in `_<name>`: devices put their
probe's name before the quantity (Tasmota's `BME280.Temperature` is stored as `bme280_temperature`), and a value
sent in F is converted to the canonical C whatever the probe (the longest configured ending wins). Thresholds and
detectors are not extended this way: `device_temperature` of a plug is not a room's temperature.
"""
from __future__ import annotations

import math

from ..config import MetricUnits
from ..records import Invalid, Reading
from ..runtime.stage import RecordStage, Refused


class NormalizeUnits(RecordStage):
    """Reading -> Reading in the canonical unit; an unknown unit for a configured metric is refused."""

    name = "transform"
    accepts = Reading

    CACHE = 4096  # names come from publishers: the endings found are remembered up to this many, then forgotten

    def __init__(self, units: dict[str, MetricUnits]):
        self.rules = {
            metric: (spec.canonical, {r.unit: (r.scale, r.offset) for r in spec.convert})
            for metric, spec in units.items()
        }
        self._by_ending: dict[str, tuple | None] = {}

    def rule_for(self, metric: str) -> tuple | None:
        """The units rule of a metric: its own, else the one of its longest configured ending after a '_'."""
        rule = self.rules.get(metric)
        if rule is not None or "_" not in metric:
            return rule
        try:
            return self._by_ending[metric]
        except KeyError:
            pass
        parts = metric.split("_")
        found = next((self.rules[e] for e in ("_".join(parts[i:]) for i in range(1, len(parts))) if e in self.rules),
                     None)
        if len(self._by_ending) >= self.CACHE:
            self._by_ending.clear()
        self._by_ending[metric] = found
        return found

    def process_batch(self, items: list, refused: Refused) -> list:
        """`process` over the batch; readings without a unit (nearly all) pass without a call."""
        out: list = []
        append = out.append
        process = self.process
        for r in items:
            if r.unit is None:
                append(r)
                continue
            try:
                out += process(r)
            except Exception as err:  # noqa: BLE001 - refused alone, as per_record does
                refused.add(r, err)
        return out

    def process(self, r: Reading) -> list[Reading]:
        if r.unit is None:
            return [r]
        rule = self.rule_for(r.metric)
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
