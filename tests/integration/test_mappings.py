"""Mappings (config `sources:`) through the real daemon and Mosquitto, given as a second `--config` file: readings
stored with the right ids, metrics, values, units and timestamps; a payload that does not fit dead-lettered with
the mapping's name; `no_mapping`; ignored topics acknowledged and not dead-lettered; a mapping topic outside
`mqtt.topics` subscribed automatically; one device's messages keyed to one partition in order; the dashboard's
Mappings API showing the counts."""
from __future__ import annotations

import pytest

import json
import socket
import urllib.request
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import yaml

from tests.integration.clients import DaemonProcess, Publisher, read_topic, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.faults  # about 30 s: out of make test-fast
def test_mappings_from_a_second_config_file_store_refuse_ignore_and_count(env, tmp_path):
    root, zroot = env.root, f"z{env.run_id}"  # zroot is not under mqtt.topics: only the mapping subscribes it
    port = _free_port()
    # Only the mappings and application logs: a topic neither takes is no_mapping.
    extra = {"processing": {"formats": ["log"]}, "dashboard": {"enabled": True, "port": port},
             "kafka": {"partitions": 4}}
    env.migrate(env.settings(**extra))
    main = env.write_config(tmp_path / "config.yaml", **extra)
    fragment = tmp_path / "devices.yaml"
    fragment.write_text(yaml.safe_dump({"sources": [
        {"name": "tasmota", "topic": f"{root}/tele/{{sensor_id}}/SENSOR", "readings": ["*.Temperature", "*.Humidity"],
         "rename": {"bme280_temperature": "temperature"}, "timestamp": {"path": "Time", "assume_zone": "Europe/Berlin"},
         "unit": {"path": "TempUnit", "metrics": ["*temperature"]}, "type": "tasmota",
         "ignore": [f"{root}/tele/+/LWT"]},
        {"name": "z2m", "topic": f"{zroot}/{{sensor_id+}}", "exclude": ["linkquality"],
         "ignore": [f"{zroot}/bridge/#"]},
    ]}))
    daemon = DaemonProcess([main, fragment], tmp_path / "daemon.log").start()
    pub = Publisher()
    berlin = ZoneInfo("Europe/Berlin")  # Tasmota writes local time without a zone
    local = datetime.now(timezone.utc).astimezone(berlin).replace(microsecond=0, tzinfo=None)
    expected_ts = local.replace(tzinfo=berlin).timestamp()
    try:
        assert daemon.logged(f"{zroot}/#")  # subscribed automatically (event=mqtt_subscribed topics=...)
        pub.publish_all([
            (f"{root}/tele/plug-1/SENSOR", json.dumps({"Time": local.isoformat(), "BME280": {"Temperature": 70.7,
                                                       "Humidity": 40.5}, "TempUnit": "F"})),
            (f"{root}/tele/plug-1/LWT", "Online"),
            (f"{root}/tele/plug-2/SENSOR", json.dumps({"BME280": {"Temperature": 20}})),  # no Time: refused
            (f"{root}/elsewhere", "1"),  # no mapping, no format
            (f"{zroot}/bridge/state", '{"state": "online"}'),
            (f"{zroot}/Living Room/Plug 2", json.dumps({"power": 12.5, "state": "ON", "linkquality": 80,
                                                        "child_lock": True})),
            *[(f"{zroot}/Hall/Lamp", json.dumps({"seq_no": i})) for i in range(30)],
        ])
        wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] >= 34, 40, what="mapped readings")
        letters = read_topic(f"t{env.run_id}.sensor-readings.dlq", expected=2)

        def api():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/mappings", timeout=5) as r:
                return {m["name"]: m for m in json.load(r)["mappings"]}
        wait_for(lambda: api()["z2m"]["messages"] == 31, 20, what="the mappings API counts")
        panel = api()
    finally:
        pub.close()
        daemon.stop()
    stored = env.query("SELECT sensor_id, metric, value, extract(epoch from timestamp) FROM measurements "
                       "WHERE metric <> 'seq_no' ORDER BY sensor_id, metric")
    # The unit came from the sibling field TempUnit (F) and config.yaml's units converted it to C: 70.7 F -> 21.5 C.
    assert [(s, m, round(v, 3)) for s, m, v, _ in stored] == [
        ("Living_Room_Plug_2", "child_lock", 1.0), ("Living_Room_Plug_2", "power", 12.5),
        ("plug-1", "bme280_humidity", 40.5), ("plug-1", "temperature", 21.5)]
    assert all(float(ts) == expected_ts for s, _, _, ts in stored if s == "plug-1")
    assert env.query("SELECT type FROM sensors WHERE sensor_id = 'plug-1'") == [("tasmota",)]
    assert [v for (v,) in env.query("SELECT value FROM measurements WHERE sensor_id = 'Hall_Lamp' ORDER BY timestamp")] \
        == [float(i) for i in range(30)]
    # Dead letters: the refused Tasmota message names its mapping; the unmapped topic is no_mapping; the ignored
    # topics (LWT, bridge state) are not dead letters.
    by_reason = {dict(m.headers())["reason"].decode(): dict(m.headers()) for m in letters}
    assert set(by_reason) == {"timestamp_missing", "no_mapping"}
    assert b"mapping tasmota:" in by_reason["timestamp_missing"]["error"]
    assert by_reason["no_mapping"]["mqtt_topic"] == f"{root}/elsewhere".encode()
    # One device, one partition, in order: the key is its topic capture (a friendly name with '/').
    raw = read_topic(f"t{env.run_id}.sensor-readings", expected=37)
    lamp = [m for m in raw if m.key() == b"Hall/Lamp"]
    assert len(lamp) == 30 and len({m.partition() for m in lamp}) == 1
    assert [json.loads(m.value())["seq_no"] for m in sorted(lamp, key=lambda m: m.offset())] == list(range(30))
    # The dashboard's Mappings panel: counts per mapping and the last refused sample with its reason.
    t, z = panel["tasmota"], panel["z2m"]
    assert (t["messages"], t["readings"], t["ignored"], t["refused"]) == (2, 2, 1, 1)
    assert t["last_refused"]["reason"] == "timestamp_missing" and t["last_refused"]["topic"] == f"{root}/tele/plug-2/SENSOR"
    assert (z["messages"], z["readings"], z["text_skipped"], z["ignored"], z["refused"]) == (31, 32, 1, 1, 0)
    assert z["readings_per_message"] == round(32 / 31, 2)
