"""The registry command's pure parts: its command line and the CSV it imports."""
import re

import pytest

from pipeline.tools.sensors import UsageError, check_entry, parse_args, parse_csv


def test_commands_parse_with_their_options():
    a = parse_args(["--config", "c.yaml", "add", "dev-1", "--type", "boiler", "--location", "cellar"])
    assert (a.config, a.command, a.sensor_id, a.sensor_type, a.location) == ("c.yaml", "add", "dev-1", "boiler", "cellar")
    a = parse_args(["list", "--type", "env", "--match", "hall", "--limit", "5", "--json"])
    assert (a.sensor_type, a.match, a.limit, a.json) == ("env", "hall", 5, True)
    assert parse_args(["list"]).limit == 1000
    a = parse_args(["import", "fleet.csv", "--update"])
    assert (a.file, a.update) == ("fleet.csv", True)
    a = parse_args(["relabel", "dev-1", "--no-location"])
    assert (a.sensor_type, a.location, a.no_location) == (None, None, True)
    a = parse_args(["remove", "dev-1", "--purge"])
    assert (a.sensor_id, a.purge) == ("dev-1", True)


@pytest.mark.parametrize("argv", [
    [],                                                   # no command
    ["add", "dev-1"],                                     # add needs --type
    ["relabel", "dev-1"],                                 # nothing to change
    ["relabel", "dev-1", "--location", "x", "--no-location"],
    ["list", "--limit", "0"],
    ["list", "--limit", "many"],
    ["frobnicate"],
])
def test_malformed_command_lines_exit_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2


def test_csv_with_header_comments_blank_lines_and_empty_locations():
    text = "sensor_id,type,location\n# the cellar\ndev-1,boiler,cellar\n\n dev-2 , env ,\ndev-3,env\n\"dev-4\",env,\"hall, east\"\n"
    assert parse_csv(text) == [("dev-1", "boiler", "cellar"), ("dev-2", "env", None), ("dev-3", "env", None),
                               ("dev-4", "env", "hall, east")]
    assert parse_csv("dev-1,boiler,cellar\n") == [("dev-1", "boiler", "cellar")]  # no header
    assert parse_csv("") == []


@pytest.mark.parametrize("text, message", [
    ("sensor_id,type,location\ndev-1,env,a\ndev-1,env,b\n", "line 3: 'dev-1' already on line 2"),
    ("dev-1\n", "line 1: expected sensor_id,type[,location], got 1 column"),
    ("dev-1,env,hall,extra\n", "line 1: expected"),
    ("dev 1,env,hall\n", "line 1: 'dev 1': sensor_id_invalid"),
    ("dev-1,env');DROP--,hall\n", "line 1: 'dev-1': type_invalid"),
    ("dev-1,env,\x07bell\n", "line 1: 'dev-1': location_invalid"),
    ("dev-1," + "t" * 21 + ",hall\n", "type_too_long"),
    ("ok,env\napp:pipeline,app\n", "line 2: 'app:pipeline' (type 'app'): reserved_sensor_id"),
    ("dev-1,broker\n", "reserved_sensor_type"),
])
def test_a_bad_csv_row_is_refused_naming_its_line(text, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_csv(text)


def test_entries_follow_the_reading_rules():
    assert check_entry("dev-1", "env", None) == ("dev-1", "env", None)
    for bad in (("", "env", None), ("d" * 51, "env", None), ("dev-1", "", None), ("dev-1", "env", "x" * 101),
                ("Broker:x", "env", None)):
        with pytest.raises(UsageError):
            check_entry(*bad)
