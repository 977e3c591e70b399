"""The one naming rule for device-written metric and sensor names (pipeline/records.py)."""
import pytest

from pipeline.records import metric_name, sensor_name
from pipeline.stages.validate import METRIC_RE, SENSOR_ID_RE


@pytest.mark.parametrize("raw,expected", [
    ("Temperature", "temperature"),            # Tasmota
    ("BME280.Temperature", "bme280_temperature"),
    ("ActivePower", "active_power"),
    ("linkquality", "linkquality"),            # Zigbee2MQTT
    ("co2", "co2"), ("pm25", "pm25"), ("PM2.5", "pm2_5"),
    ("DS18B20-1.Temperature", "ds18b20_1_temperature"),
    ("2ndTemp", "m_2nd_temp"),
    ("  spaced  name ", "spaced_name"),
])
def test_metric_names_follow_the_one_rule(raw, expected):
    assert metric_name(raw) == expected
    assert METRIC_RE.fullmatch(expected)


@pytest.mark.parametrize("raw,expected", [
    ("Living Room/Plug 2", "Living_Room_Plug_2"),   # a Zigbee2MQTT friendly name
    ("a4:c1:38:01", "a4:c1:38:01"),
    ("0x00158d0001", "0x00158d0001"),
    ("  _x y", "x_y"),
    ("tasmota_ABC123", "tasmota_ABC123"),
])
def test_sensor_names_keep_case_and_lose_what_ids_cannot_hold(raw, expected):
    assert sensor_name(raw) == expected
    assert SENSOR_ID_RE.fullmatch(expected)


def test_the_rule_is_idempotent():
    for raw in ("BME280.Temperature", "Living Room/Plug 2", "ActivePower", "PM2.5"):
        assert metric_name(metric_name(raw)) == metric_name(raw)
        assert sensor_name(sensor_name(raw)) == sensor_name(raw)
