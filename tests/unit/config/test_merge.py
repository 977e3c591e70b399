"""`--config` repeated: files deep-merge in order (sources by name, other lists replaced, later scalars win),
the daemon and --check-config take them all, and live reload watches every file."""
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load
from pipeline.config.loading import merge_trees
from pipeline.observability.metrics import Metrics
from pipeline.runtime.reload import ConfigHolder

ROOT = Path(__file__).resolve().parents[3]


def test_merge_appends_sources_by_name_replaces_other_lists_and_later_scalars_win():
    base = {"mqtt": {"host": "a", "port": 1883, "topics": ["sensors/#"]},
            "sources": [{"name": "one", "topic": "o/{sensor_id}"}, {"name": "two", "topic": "t/{sensor_id}"}]}
    over = {"mqtt": {"host": "b", "topics": ["x/#"]},
            "sources": [{"name": "two", "topic": "t2/{sensor_id}"}, {"name": "three", "topic": "h/{sensor_id}"}]}
    merged = merge_trees(base, over)
    assert merged["mqtt"] == {"host": "b", "port": 1883, "topics": ["x/#"]}
    assert [(s["name"], s["topic"]) for s in merged["sources"]] == [
        ("one", "o/{sensor_id}"), ("two", "t2/{sensor_id}"), ("three", "h/{sensor_id}")]
    assert base["sources"][1]["topic"] == "t/{sensor_id}"  # inputs untouched


def test_load_merges_files_in_order_and_names_every_file(tmp_path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("log_level: INFO\nsources:\n  - {name: one, topic: 'o/{sensor_id}'}\n")
    b.write_text("log_level: DEBUG\nsources:\n  - {name: two, topic: 't/{sensor_id}'}\n")
    s = load([a, b], env={})
    assert s.config.log_level == "DEBUG"
    assert [m.name for m in s.config.sources] == ["one", "two"]
    assert s.files == (str(a), str(b))
    b.write_text("sources:\n  - {name: one, topic: 'o/{sensor_id}'}\n  - {name: one, topic: 'p/{sensor_id}'}\n")
    s = load([a, b], env={})  # a repeated name in a later file replaces: the last one wins
    assert [(m.name, m.topic) for m in s.config.sources] == [("one", "p/{sensor_id}")]
    b.write_text("sources:\n  - {name: x, topic: 't/{sensor_id}', encoding: nope}\n")
    with pytest.raises(ConfigError, match=r"^sources\[1\]\.encoding: unknown payload encoding"):
        load([a, b], env={})


def test_check_config_takes_repeated_config_and_refuses_a_bad_mapping_naming_the_key(tmp_path):
    good = tmp_path / "tasmota.yaml"
    good.write_text("sources:\n  - {name: tasmota, topic: 'tele/{sensor_id}/SENSOR', readings: ['*.Temperature']}\n")
    proc = subprocess.run([sys.executable, str(ROOT / "realtime_pipeline.py"), "--config", str(ROOT / "config.yaml"),
                           "--config", str(good), "--check-config"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"config ok: {ROOT / 'config.yaml'}, {good}" in proc.stdout and '"tasmota"' in proc.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources:\n  - {name: t, topic: 'tele/{sensor_id}/SENSOR', timestamp: {path: Time, format: weekly}}\n")
    proc = subprocess.run([sys.executable, str(ROOT / "realtime_pipeline.py"), "--config", str(ROOT / "config.yaml"),
                           "--config", str(bad), "--check-config"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("config error: sources[0].timestamp.format: ")


def test_reload_watches_every_config_file(tmp_path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("thresholds: {}\n")
    b.write_text("log_level: INFO\n")
    holder = ConfigHolder(load([a, b], env={}), Metrics(), env={})
    assert holder.watchable
    b.write_text("log_level: WARNING\nthresholds: {temperature: {warning: {max: 30}}}\n")
    assert holder.reload("test")
    assert holder.current.config.log_level == "WARNING" and "temperature" in holder.current.config.thresholds
    assert holder.current.files == (str(a), str(b))
