"""Unit normalisation (pipeline/stages/transform.py): a `units` entry covers its metric and the metrics that end in
`_<its name>` (a probe's name before the quantity), the longest configured ending first."""
import pytest

from pipeline.config import parse
from pipeline.records import Invalid, Reading
from pipeline.stages.transform import NormalizeUnits

CFG = parse({"units": {"temperature": {"canonical": "C", "convert": [{"unit": "F", "scale": 5 / 9, "offset": -160 / 9}]},
                       "dew_temperature": {"canonical": "K", "convert": [{"unit": "C", "scale": 1.0, "offset": 273.15}]},
                       "pressure": {"canonical": "hPa", "convert": [{"unit": "Pa", "scale": 0.01}]}}}, {})


def normalise(metric: str, value: float, unit: str | None) -> Reading:
    r = Reading("dev-1", "sensor", None, metric, value, 1000.0, 1000.0, None, unit)
    [out] = NormalizeUnits(CFG.units).process(r)
    return out


@pytest.mark.parametrize("metric", ["temperature", "bme280_temperature", "ds18b20_1_temperature"])
def test_fahrenheit_becomes_celsius_for_the_metric_and_every_probe_of_it(metric):
    out = normalise(metric, 212.0, "F")
    assert out.value == pytest.approx(100.0) and out.unit == "C"


def test_the_longest_configured_ending_wins():
    out = normalise("sht3x_dew_temperature", 10.0, "C")
    assert out.value == pytest.approx(283.15) and out.unit == "K"


def test_a_name_that_only_contains_the_word_is_not_covered():
    assert normalise("temperature_max", 212.0, "F").value == 212.0  # not an ending: kept as sent
    assert normalise("xtemperature", 212.0, "F").unit == "F"


def test_an_unknown_unit_of_a_covered_probe_is_refused_with_its_reason():
    with pytest.raises(Invalid) as err:
        normalise("bme280_pressure", 1.0, "bar")
    assert err.value.reason == "unknown_unit"
