"""The detectors registry: slot layout, plug-in config validated by its own schema, a plug-in judged by the
evaluator beside the built-ins without moving their slots."""
import msgspec
import pytest

from pipeline.app.build import alert_sections
from pipeline.config import ConfigError, parse
from pipeline.operators.alerts.detectors import HISTORY, OUT_N, RUN_N, RUN_VALUE, CLEAR, SeriesDetector, Signal
from pipeline.operators.alerts.evaluator import AlertEvaluator, detector_types
from pipeline.operators.alerts import rate
from pipeline.records import Reading
from pipeline.registry import detectors


class AboveFirstRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    k: float = 2.0
    for_s: float = 0.0


def _check(where, rule):
    if rule.k <= 1:
        raise ValueError("k must be above 1")


class AboveFirst(SeriesDetector):
    type = "above_first_unit"

    def _judge(self, s, value, ts, rule):
        self.with_history(s)
        if not s[self.offset]:
            s[self.offset] = value
            return None
        return Signal("warning", detail="above its first value") if value > rule.k * s[self.offset] else CLEAR


SPEC = detectors.DetectorSpec("above_first_unit", AboveFirstRule, lambda o, h: AboveFirst().placed(o, h),
                              slots=1, history=True, check=_check)


@pytest.fixture
def plugin():
    detectors.register(SPEC)
    yield SPEC
    detectors.unregister(SPEC.name)


def test_the_built_in_detectors_keep_their_slots_and_order():
    lay = detectors.layout()
    assert [s.name for s in detectors.ordered()] == ["threshold", "rate", "outlier", "stuck"]
    assert (lay.offsets["outlier"], lay.offsets["stuck"], lay.history) == (OUT_N, RUN_VALUE, HISTORY) == (1, 4, 9)
    assert detector_types() == ("threshold", "rate", "outlier", "stuck", "offline")


def test_a_plugin_gets_slots_after_the_built_ins_and_the_rate_window_moves_after_it(plugin):
    lay = detectors.layout()
    assert (lay.offsets["outlier"], lay.offsets["stuck"], lay.offsets[plugin.name], lay.history) == (1, 4, 9, 10)
    assert "above_first_unit" in detector_types()


def _cfg(**metric):
    return parse({"thresholds": {}, "validation": {"metrics": "any"},
                  "detection": {"offline_after_s": 0, "metrics": {"temperature": metric}}}, {})


def test_a_plugin_is_judged_beside_the_built_ins_in_one_array(plugin):
    cfg = _cfg(outlier={"z_warning": 50}, stuck={"count": 100}, rate={"warning": 1e9, "min_samples": 2,
                                                                         "min_span_s": 0}, above_first_unit={"k": 2})
    ev = AlertEvaluator(alert_sections(cfg).evaluator)
    readings = [Reading("s", "sensor", None, "temperature", float(v), float(i), float(i)) for i, v in enumerate([10, 11, 12, 25])]
    out = ev.evaluate(readings, 100.0)
    assert [(t.alert.type, t.event) for t in out] == [("above_first_unit", "opened")]
    s = ev.series[("s", "temperature")]
    assert s[OUT_N] == 4 and s[RUN_N] == 1 and s[9] == 10  # outlier and stuck where they were; the plug-in at 9
    assert rate.points(s, 10) == [(0.0, 10.0), (1.0, 11.0), (2.0, 12.0), (3.0, 25.0)]  # the window after it


def test_a_plugin_section_is_validated_by_its_schema_naming_the_key(plugin):
    with pytest.raises(ConfigError, match=r"detection.metrics.temperature.above_first_unit.k: Expected `float`"):
        _cfg(above_first_unit={"k": "x"})
    with pytest.raises(ConfigError, match=r"detection.metrics.temperature.above_first_unit: k must be above 1"):
        _cfg(above_first_unit={"k": 0.5})
    assert _cfg(above_first_unit={"k": 3}).detection.metrics["temperature"].rule("above_first_unit") == AboveFirstRule(3)


def test_a_schema_without_for_s_is_refused():
    class NoHold(msgspec.Struct):
        k: float = 1.0
    with pytest.raises(ValueError, match="for_s"):
        detectors.register(detectors.DetectorSpec("nohold", NoHold, lambda o, h: None))


def test_without_registration_the_section_is_an_unknown_key():
    with pytest.raises(ConfigError, match=r"detection.metrics.temperature.above_first_unit: unknown key"):
        _cfg(above_first_unit={"k": 3})


def test_built_in_sections_keep_their_errors():
    with pytest.raises(ConfigError, match=r"detection.metrics.temperature.stuck.repeat_chance: "):
        _cfg(stuck={"repeat_chance": 2})
