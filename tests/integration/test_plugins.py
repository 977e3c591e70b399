"""A plug-in reaches the deployed daemon (`python realtime_pipeline.py`) through its config alone: the module is
named under `plugins:`, imported before the config is checked, and what it registers is selected by name."""
from __future__ import annotations

import subprocess
import sys

from tests.integration.clients import DaemonProcess, Publisher, wait_for
from tests.integration.conftest import ROOT

PLUGIN = "tests.integration.plugins.semicolon_format"


def test_a_module_named_under_plugins_is_loaded_by_the_daemon_and_its_format_stores_readings(env, tmp_path):
    extra = {"plugins": [PLUGIN], "processing": {"formats": ["semicolon", "log", "json", "number"]},
             "validation": {"metrics": "any"}}
    env.migrate(env.settings(**extra))
    daemon = DaemonProcess(env.write_config(tmp_path / "config.yaml", **extra), tmp_path / "daemon.log").start()
    pub = Publisher()
    try:
        pub.publish_all([(f"{env.root}/plant/press-7/semicolon", "temperature;61.5\nvibration;0.25")])
        wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] == 2, 30, what="the plug-in's readings")
        assert daemon.logged(f"plugins={PLUGIN}")  # named in the start-up banner
    finally:
        pub.close()
        daemon.stop()
    assert env.query("SELECT sensor_id, metric, value FROM measurements ORDER BY metric") == [
        ("press-7", "temperature", 61.5), ("press-7", "vibration", 0.25)]


def test_a_plugin_that_cannot_be_imported_is_refused_naming_the_key(env, tmp_path):
    path = env.write_config(tmp_path / "config.yaml", plugins=["no_such_module_here"])
    done = subprocess.run([sys.executable, str(ROOT / "realtime_pipeline.py"), "--config", str(path), "--check-config"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "config error: plugins[0]: cannot import 'no_such_module_here': ModuleNotFoundError" in done.stderr
