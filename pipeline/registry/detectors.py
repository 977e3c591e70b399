"""Alert detectors: an entry is a rule type name, its config schema, its slots of per-series history, its message.

Every series with a detector that keeps history has one packed array of doubles (operators/alerts/detectors.py):
[SEEN], then each detector's fixed slots, then at most one variable-length window (`tail`, the rate detector's).
The registry assigns the offsets: the pipeline's own detectors first, in their order, then plug-ins in the order
they registered. So a new detector never renumbers another's slots; only the tail starts after it.

A rule is configured under `detection.metrics.<metric>.<name>` (and per sensor under
`detection.sensors.<id>.metrics.<metric>.<name>`), converted and checked by the entry's `schema` (a msgspec Struct with a `for_s` field, the hold every detector
shares) and `check`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

# Evaluation order of the pipeline's own detectors; a plug-in comes after them.
PLUGIN_ORDER = 100


@dataclass(frozen=True)
class DetectorSpec:
    """One detector. `build(offset, history)` returns the detector, given where its slots start and how long the
    fixed part of a series' array is (where a tail starts). `value_first`: its alert message reads "<metric> of
    sensor <id> is <value>, <detail>"; `value_after`: "... <detail>, now <value>"; otherwise "<subject> <detail>".
    `check(where, rule)` refuses a rule whose fields contradict each other (raise ValueError with the message)."""

    name: str
    schema: type
    build: Callable[[int, int], Any]
    slots: int = 0
    history: bool = False
    tail: bool = False
    value_first: bool = False
    value_after: bool = False
    check: Callable[[str, Any], None] | None = None
    order: int = PLUGIN_ORDER
    doc: str = ""


_SPECS: dict[str, DetectorSpec] = {}
_SEQ: dict[str, int] = {}
RESERVED = frozenset({"offline", "threshold_only", "enabled", "metrics", "sensors"})


def register(spec: DetectorSpec) -> DetectorSpec:
    """Add a detector under its rule type name (the last registration of a name wins)."""
    if spec.name in RESERVED:
        raise ValueError(f"detector name {spec.name!r} is reserved")
    if spec.tail and any(s.tail for n, s in _SPECS.items() if n != spec.name):
        raise ValueError(f"detector {spec.name!r}: only one detector may keep a variable-length window")
    if "for_s" not in getattr(spec.schema, "__struct_fields__", ()):
        raise ValueError(f"detector {spec.name!r}: its schema must have `for_s` (how long a condition holds first)")
    if spec.slots < 0:
        raise ValueError(f"detector {spec.name!r}: slots must not be negative")
    _SEQ.setdefault(spec.name, len(_SEQ))
    _SPECS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a detector (tests that register one of their own)."""
    _SPECS.pop(name, None)


def ordered() -> list[DetectorSpec]:
    """Every registered detector in evaluation (and slot) order."""
    return sorted(_SPECS.values(), key=lambda s: (s.order, _SEQ[s.name]))


def get(name: str) -> DetectorSpec | None:
    return _SPECS.get(name)


@dataclass(frozen=True)
class Layout:
    """Where each detector's slots start in a series' array, and where the fixed part ends."""

    offsets: dict[str, int]
    history: int


def layout(specs: list[DetectorSpec] | None = None) -> Layout:
    """Offsets for `specs` (default: every registered detector): [SEEN] is 0, then slots in order."""
    offsets, at = {}, 1
    for spec in specs if specs is not None else ordered():
        offsets[spec.name] = at
        at += spec.slots
    return Layout(offsets, at)


def build() -> list[tuple[DetectorSpec, Any]]:
    """A fresh detector of every registered entry, in evaluation order, placed in the array by `layout`."""
    specs = ordered()
    lay = layout(specs)
    return [(spec, spec.build(lay.offsets[spec.name], lay.history)) for spec in specs]
