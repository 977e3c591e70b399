"""try_mapping: one message through the real pure stages, printed; exit 0 stored, 1 refused, 2 bad config."""
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from pipeline.tools.try_mapping import main

ROOT = Path(__file__).resolve().parents[3]
FRAGMENT = """
sources:
  - name: tasmota
    topic: "tele/{sensor_id}/SENSOR"
    readings: ["*.Temperature", "*.Humidity"]
    rename: {bme280_temperature: temperature}
    timestamp: {path: Time}
    unit: {path: TempUnit, metrics: ["*temperature"]}
    ignore: ["tele/+/LWT"]
"""


def try_mapping(tmp_path, capsys, *args) -> subprocess.CompletedProcess:
    """The command's main in this process (a process of its own costs a second of start-up for each case; the
    last test runs the real `python -m` once)."""
    frag = tmp_path / "tasmota.yaml"
    frag.write_text(FRAGMENT)
    argv = ["--config", str(ROOT / "config.yaml"), "--config", str(frag), *args]
    code = main(argv)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out.out, out.err)


def test_prints_the_readings_that_would_be_stored_after_unit_conversion(tmp_path, capsys):
    now = datetime.fromtimestamp(int(time.time()) - 60, timezone.utc).replace(tzinfo=None)
    payload = tmp_path / "msg.json"
    payload.write_text(json.dumps({"Time": now.isoformat(), "BME280": {"Temperature": 212.0, "Humidity": 40},
                                   "TempUnit": "F"}))
    proc = try_mapping(tmp_path, capsys, "tele/plug-1/SENSOR", f"@{payload}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mapping tasmota: 2 reading(s)" in proc.stdout
    # config.yaml's units: temperature canonical C, F converted
    assert f"sensor=plug-1 metric=temperature value=100 C timestamp={now.isoformat()}.000000Z" in proc.stdout
    assert "metric=bme280_humidity value=40 " in proc.stdout


def test_prints_the_refusal_with_its_reason_and_mapping_and_exits_1(tmp_path, capsys):
    proc = try_mapping(tmp_path, capsys, "--json", "tele/plug-1/SENSOR", '{"BME280": {"Temperature": 1}}')
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["readings"] == [] and out["refused"][0]["reason"] == "timestamp_missing"
    assert "mapping tasmota:" in out["refused"][0]["error"]


def test_an_ignored_topic_is_said_so_and_a_bad_config_exits_2(tmp_path, capsys):
    proc = try_mapping(tmp_path, capsys, "tele/plug-1/LWT", "Offline")
    assert proc.returncode == 0 and "mapping tasmota: ignored" in proc.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources:\n  - {name: x, topic: 'a/{id}', sensor_id: '{device}'}\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline.tools.try_mapping", "--config", str(bad), "a/b", "1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("config error: sources[0].sensor_id: {device}")
