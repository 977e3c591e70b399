"""`python -m pipeline.tools.import` against the real database: bad lines reported by number with the rest stored,
the same file again doubling nothing, an import killed halfway and run again losing and doubling nothing, and
aggregates equal to those the live path (the daemon's windows) computes for the same readings."""
from __future__ import annotations

import importlib
import io
import os
import signal
import subprocess
import sys
import time

from tests.integration.clients import Publisher, RunningPipeline, wait_for
from tests.integration.conftest import ROOT
from tests.integration.test_windows_alerts import WINDOWS, aligned_past, reading, utc

importer = importlib.import_module("pipeline.tools.import")
HEADER = "sensor_id,metric,value,timestamp,unit\n"


def run(settings, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = importer.main(list(argv), settings=settings, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_bad_lines_are_reported_by_number_and_the_rest_is_stored_in_the_canonical_unit(env, tmp_path):
    settings = env.migrate(env.settings(units={"temperature": {"canonical": "C", "convert": [
        {"unit": "F", "scale": 0.5555555555555556, "offset": -17.77777777777778}]}}))
    t = float(int(time.time()) - 600)
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t + 1))
    lines = [f"imp-1,temperature,21.5,{t},C",  # line 2
             f"imp-1,temperature,212,{iso},F",  # line 3: converted to 100 C
             "imp-1,temperature,not-a-number,1700000000,",  # 4: value_not_number
             f"bad id!,temperature,1,{t},",  # 5: sensor_id_invalid
             f"imp-2,humidity,55,{t},",  # 6
             f"imp-2,humidity,56,{t + 2 * 86400},",  # 7: timestamp_in_future
             f"imp-2,humidity,57,{t - 90 * 86400},",  # 8: timestamp_too_old (validation.max_age_s 30 days)
             f"imp-2,humidity,58,{t + 1},",  # 9
             "imp-2,humidity,59",  # 10: csv_columns
             f"imp-2,temperature,60,{t},K",  # 11: unknown_unit
             "",  # 12: blank, skipped
             f"imp-3,pressure,1013.25,{t},"]  # 13
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "\n".join(lines) + "\n" + "imp-3,pressure," + "9" * 70000 + f",{t}\n" + f"imp-3,pressure,1.5,{t + 5},\n")
    code, out, err = run(settings, str(path))
    assert code == 0, err
    reported = {int(line.split(":")[1]): line.split(":")[2].strip() for line in err.splitlines()
                if line.startswith(str(path) + ":")}
    assert reported == {4: "value_not_number", 5: "sensor_id_invalid", 7: "timestamp_in_future",
                        8: "timestamp_too_old", 10: "csv_columns", 11: "unknown_unit", 14: "line_too_long"}
    assert env.query("SELECT sensor_id, metric, value FROM measurements ORDER BY 1, 2, timestamp") == [
        ("imp-1", "temperature", 21.5), ("imp-1", "temperature", 212 * 0.5555555555555556 - 17.77777777777778), ("imp-2", "humidity", 55.0),
        ("imp-2", "humidity", 58.0), ("imp-3", "pressure", 1013.25), ("imp-3", "pressure", 1.5)]
    assert env.query("SELECT sensor_id, type FROM sensors ORDER BY 1") == [("imp-1", "sensor"), ("imp-2", "sensor"),
                                                                          ("imp-3", "sensor")]
    assert f"{path}: 6 stored, 0 already stored, 7 bad line(s)" in out
    assert "\r" not in err and "event=progress_done task=import" in err  # not a terminal: plain lines
    # The aggregates of the imported range were rebuilt: one 1m row per series and minute.
    assert env.query("SELECT sum(count) FROM aggregations WHERE period = '1m'") == [(6,)]


def test_allow_old_lifts_the_age_limit_and_says_what_retention_will_do(env, tmp_path):
    settings = env.migrate()
    old = float((int(time.time()) - 400 * 86400) // 300 * 300)  # both readings in one 1m window
    path = tmp_path / "old.csv"
    path.write_text(HEADER + f"old-1,temperature,5,{old},\nold-1,temperature,6,{old + 30},\n")
    code, out, err = run(settings, str(path))
    assert code == 0 and env.query("SELECT count(*) FROM measurements") == [(0,)] and "timestamp_too_old" in err
    path2 = tmp_path / "old2.csv"
    path2.write_text(path.read_text())
    code, out, err = run(settings, "--allow-old", str(path2))
    assert code == 0 and env.query("SELECT count(*) FROM measurements") == [(2,)]
    assert "next retention run" in err and "holds readings older than 30 days" in out
    assert env.query("SELECT period, count, avg_value FROM aggregations ORDER BY 1") == [
        ("1d", 2, 5.5), ("1h", 2, 5.5), ("1m", 2, 5.5), ("5m", 2, 5.5)]


def test_aggregates_equal_those_of_the_live_path_for_the_same_readings(env, tmp_path):
    live = env.migrate(env.settings(**WINDOWS))
    root, t0 = env.root, aligned_past()
    sensors = [f"w{i:02d}" for i in range(20)]
    readings = [(s, round(10 + i * 0.37 + k * 1.3, 2), t0 + k * 7 + i % 5) for k in range(8) for i, s in enumerate(sensors)]
    pub = Publisher()
    with RunningPipeline(live, env.metrics()):
        pub.publish_all([reading(root, s, "temperature", v, ts) for s, v, ts in readings])
        pub.publish_all([reading(root, s, "temperature", 0.0, t0 + 65) for s in sensors])  # closes the windows
        wait_for(lambda: env.query("SELECT count(*) FROM aggregations WHERE period = '1m'")[0][0] == len(sensors),
                 what="the daemon's 1m rows")
    pub.close()
    window = ("SELECT sensor_id, metric, period, timestamp, avg_value, min_value, max_value, count FROM aggregations "
              "WHERE timestamp < %s ORDER BY 1, 2, 3, 4")
    live_rows = env.query(window, (utc(t0 + 60),))
    assert len(live_rows) > len(sensors) * 6  # five or six 10s windows and one 1m window each

    other = env.migrate(env.settings(postgres={"database": f"test_{env.run_id}_import"}, **WINDOWS))
    path = tmp_path / "same.csv"
    path.write_text(HEADER + "".join(f"{s},temperature,{v},{ts},\n" for s, v, ts in readings))
    code, out, err = run(other, str(path))
    assert code == 0 and f"{len(readings)} stored" in out, err
    import psycopg
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=f"test_{env.run_id}_import") as conn:
        assert conn.execute(window, (utc(t0 + 60),)).fetchall() == live_rows


def write_rows(path, n: int, sensors: int = 200, step_s: int = 10) -> float:
    """n readings of `sensors` sensors, one every step_s per sensor, ending about a minute ago; returns the first time."""
    start = float(int(time.time()) - 60 - (n // sensors) * step_s)
    with open(path, "w") as f:
        f.write(HEADER)
        f.writelines(f"imp{i % sensors:03d},temperature,{(i * 7) % 1000 / 10},{start + i // sensors * step_s},\n"
                     for i in range(n))
    return start


def test_a_line_protocol_file_is_imported_with_its_bad_lines_reported(env, tmp_path):
    settings = env.migrate(env.settings(units={"temperature": {"canonical": "C", "convert": [
        {"unit": "F", "scale": 0.5, "offset": -16}]}}))
    ns = (int(time.time()) - 600) * 10**9
    lines = ["# exported from InfluxDB",  # 1: a comment
             f"weather,sensor_id=st-1 temperature=21.5,humidity=40i {ns}",  # 2: two readings
             f"weather,sensor_id=st-1,unit=F temperature=70 {ns + 10**9}",  # 3: 70 F -> 19 C
             f"boiler pressure=2.5,state=\"on\",ok=true {ns}",  # 4: the measurement names the sensor; text skipped
             "weather,sensor_id=st-2 temperature=",  # 5: line_protocol_invalid
             f"weather,sensor_id=st-2 temperature=1 {ns + 400 * 86400 * 10**9}",  # 6: timestamp_in_future
             "weather,sensor_id=st-2 temperature=1",  # 7: timestamp_missing
             f"power,device=plug-1 value=230.5 {ns}"]  # 8: field `value`: the measurement names the metric
    path = tmp_path / "export.lp"
    path.write_text("\n".join(lines) + "\n")
    code, out, err = run(settings, str(path))
    assert code == 0, err
    reported = {int(line.split(":")[1]): line.split(":")[2].strip() for line in err.splitlines()
                if line.startswith(str(path) + ":")}
    assert reported == {5: "line_protocol_invalid", 6: "timestamp_in_future", 7: "timestamp_missing"}
    assert env.query("SELECT sensor_id, metric, value FROM measurements ORDER BY 1, 2, timestamp") == [
        ("boiler", "pressure", 2.5), ("plug-1", "power", 230.5), ("st-1", "humidity", 40.0),
        ("st-1", "temperature", 21.5), ("st-1", "temperature", 19.0)]
    assert f"{path}: 5 stored, 0 already stored, 3 bad line(s)" in out
