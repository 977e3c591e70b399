"""Finite everywhere: unit conversion refuses what overflows, running window values and the outlier detector
stay finite with huge readings, and no dashboard JSON answer contains NaN or Infinity."""
from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings, strategies as st

from pipeline.config import MetricUnits, OutlierRule, UnitRule
from pipeline.dashboard.store import parse_latest
from pipeline.operators.alerts.detectors import OUT_MEAN, OUT_VAR, Outlier
from pipeline.records import Invalid, Reading
from pipeline.stages.transform import NormalizeUnits
from pipeline.operators.windows.partials import Partials
from pipeline.operators.windows.tracker import US, WindowTracker
from tests.unit.dashboard.test_app import BEARER, FakeView, client_for

UNITS = {
    "pressure": MetricUnits(canonical="hPa", convert=(UnitRule(unit="Pa", scale=0.01), UnitRule(unit="kPa", scale=10.0))),
    "temperature": MetricUnits(canonical="C", convert=(UnitRule(unit="F", scale=0.5555555555555556, offset=-17.77777777777778),
                                                       UnitRule(unit="K", scale=1.0, offset=-273.15))),
    "distance": MetricUnits(canonical="m", convert=(UnitRule(unit="km", scale=1000.0),)),
}
UNIT_CHOICES = [("pressure", "Pa"), ("pressure", "kPa"), ("pressure", "hPa"), ("temperature", "F"), ("temperature", "K"),
                ("temperature", "C"), ("distance", "km"), ("distance", "m")]


def reading(metric: str, value: float, unit: str | None) -> Reading:
    return Reading("dev-1", "sensor", None, metric, value, 1_767_607_200.0, 1_767_607_200.0, unit=unit)


@pytest.mark.parametrize("metric, value, unit", [("pressure", 1.7e308, "kPa"), ("pressure", -1.7e308, "kPa"),
                                                 ("distance", 1e306, "km"), ("pressure", 1.7976931348623157e308, "kPa")])
def test_a_conversion_that_overflows_is_refused_as_value_not_finite(metric, value, unit):
    with pytest.raises(Invalid) as err:
        NormalizeUnits(UNITS).process(reading(metric, value, unit))
    assert err.value.reason == "value_not_finite" and unit in err.value.detail


@pytest.mark.parametrize("metric, value, unit, expected", [("pressure", 1.7e307, "kPa", 1.7e308),
                                                           ("pressure", 1.7e308, "Pa", 1.7e306),
                                                           ("pressure", 1.7e308, "hPa", 1.7e308),
                                                           ("temperature", 1.7e308, "F", 1.7e308 * 0.5555555555555556 - 17.77777777777778)])
def test_huge_values_that_stay_finite_are_converted(metric, value, unit, expected):
    [out] = NormalizeUnits(UNITS).process(reading(metric, value, unit))
    assert out.value == expected and math.isfinite(out.value)


@settings(max_examples=500)
@given(st.sampled_from(UNIT_CHOICES), st.floats(allow_nan=False, allow_infinity=False))
def test_after_unit_normalisation_a_value_is_finite_or_the_reading_is_refused(choice, value):
    metric, unit = choice
    try:
        [out] = NormalizeUnits(UNITS).process(reading(metric, value, unit))
    except Invalid as err:
        assert err.reason == "value_not_finite"
        return
    assert math.isfinite(out.value)


def test_running_window_values_stay_finite_and_exact_with_huge_readings():
    p = Partials(WindowTracker(["1m"], grace_s=0, idle_close_s=1000))
    for i, v in enumerate((1e308, 1.7e308, 1.5e308)):
        p.add("s1", "pressure", (1_767_607_200 + i) * US, v)
    part = p.fields("s1", ["pressure"])["pressure:1m"]
    assert part["avg"] == pytest.approx(1.4e308) and math.isfinite(part["avg"])
    assert (part["count"], part["min"], part["max"]) == (3, 1e308, 1.7e308)
    # An everyday window gives exactly what a plain sum would.
    p.add("s2", "temperature", 1_767_607_200 * US, 21.1)
    p.add("s2", "temperature", (1_767_607_200 + 1) * US, 21.4)
    assert p.fields("s2", ["temperature"])["temperature:1m"]["avg"] == (21.1 + 21.4) / 2


def test_the_outlier_detector_is_not_silenced_by_an_overflowing_variance():
    rule = OutlierRule(z_warning=4, z_critical=6, alpha=0.05, min_samples=3, min_std=0.5)
    det = Outlier()
    key = ("dev-1", "pressure")
    for v in (1e300, -1e300, 1e300, -1e300, 1e300):
        det.evaluate(key, v, 0.0, rule)
    mean, var = det.series[key][OUT_MEAN], det.series[key][OUT_VAR]
    assert math.isfinite(mean) and math.isfinite(var)


def test_latest_values_stored_as_inf_or_nan_read_back_as_none():
    parsed = parse_latest({"type": "sensor", "pressure": "inf", "pressure:ts": "1767607200.0", "humidity": "nan",
                           "humidity:ts": "inf", "temperature": "21.5", "temperature:ts": "1767607200.0"})
    assert parsed["metrics"] == {"humidity": {"value": None, "ts": None}, "pressure": {"value": None, "ts": 1767607200.0},
                                 "temperature": {"value": 21.5, "ts": 1767607200.0}}


class NonFiniteView(FakeView):
    """Answers every endpoint with NaN and infinities somewhere inside."""

    BAD = {"nan": float("nan"), "inf": float("inf"), "neg": float("-inf"), "list": [1.0, float("inf")],
           "nested": {"deep": (float("nan"), 2.5)}}

    def health(self):
        return True, {"status": "ok", "uptime_s": float("inf"), **self.BAD}

    def ready(self):
        return True, {"ready": True, "failing": [], "problems": {}, "checks": {"x": {"ok": True, **self.BAD}}}

    def pipeline(self, history_s, errors):
        return {"uptime_s": float("nan"), "throughput": {"mqtt_received": float("inf")}, **self.BAD}

    def sensors(self, q, limit, offset, spark):
        return {"total": 1, "sensors": [{"sensor_id": "hall-1", "metrics": {"pressure": {"value": float("inf"), "ts": 1.0}}}],
                **self.BAD}

    def sensor(self, sensor_id):
        return {"sensor_id": sensor_id, "metrics": {"pressure": {"value": float("-inf"), "ts": float("nan")}}, **self.BAD}

    def trend(self, sensor_id, metric, period, start, end):
        return {"t": [start], "avg": [float("inf")], "min": [float("-inf")], "max": [float("nan")], **self.BAD}

    def alerts(self, status, severity, sensor_id, limit):
        return [{"id": 1, "value": float("inf"), **self.BAD}]

    def resolve_alert(self, alert_id):
        return "resolved", {"id": alert_id, "value": float("nan"), **self.BAD}


def _strict(text: str):
    """Parse as a browser does: NaN and Infinity are not JSON."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("method, url", [
    ("get", "/health"), ("get", "/ready"), ("get", "/api/pipeline"), ("get", "/api/sensors"),
    ("get", "/api/sensors/hall-1"), ("get", "/api/sensors/hall-1/trend?metric=pressure"),
    ("get", "/api/alerts"), ("post", "/api/alerts/1/resolve"),
])
def test_every_json_endpoint_renders_nan_and_infinity_as_null(method, url):
    client = client_for(NonFiniteView())
    res = getattr(client, method)(url, headers=BEARER)
    assert res.status_code == 200, res.data
    body = _strict(res.get_data(as_text=True))
    text = json.dumps(body)
    assert "NaN" not in text and "Infinity" not in text
    found = body if isinstance(body, dict) else {}
    if url.endswith("/resolve"):
        found = body["alert"]
    elif url == "/api/alerts":
        found = body["alerts"][0]
    elif url == "/ready":
        found = body["checks"]["x"]
    assert found["nan"] is None and found["inf"] is None and found["neg"] is None
    assert found["list"] == [1.0, None] and found["nested"] == {"deep": [None, 2.5]}
