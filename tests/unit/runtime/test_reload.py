"""Live config reload: valid files apply, invalid ones are refused naming the key, restart-only keys reported."""
import threading
import time

import yaml
from prometheus_client import CollectorRegistry

from pipeline.config import load, parse
from pipeline.observability.metrics import Metrics
from pipeline.runtime.reload import ConfigHolder, changed_keys, is_live

BASE = {"thresholds": {"temperature": {"warning": {"max": 40}}}, "kafka": {"bootstrap_servers": "localhost:9092"}}


def write(path, tree):
    path.write_text(yaml.safe_dump(tree))


def holder(tmp_path, tree=BASE):
    f = tmp_path / "config.yaml"
    write(f, tree)
    metrics = Metrics(CollectorRegistry())
    h = ConfigHolder(load(f, env={}), metrics, env={})
    seen = []
    h.subscribe(seen.append)
    return h, f, metrics, seen


def sample(metrics, name, labels=None):
    return metrics.registry.get_sample_value(name, labels or {})


def test_valid_change_applies_and_notifies(tmp_path):
    h, f, metrics, seen = holder(tmp_path)
    write(f, {**BASE, "thresholds": {"temperature": {"warning": {"max": 30}}}})
    assert h.reload("test") is True
    assert h.current.config.thresholds["temperature"].warning.max == 30
    assert [c.thresholds["temperature"].warning.max for c in seen] == [30]
    assert h.last_reload_error is None and h.restart_required == ()
    assert sample(metrics, "pipeline_config_reloads_total", {"result": "applied"}) == 1
    assert sample(metrics, "pipeline_config_reload_ok") == 1


def test_invalid_file_is_refused_naming_the_key_and_old_config_stays(tmp_path):
    h, f, metrics, seen = holder(tmp_path)
    write(f, {**BASE, "thresholds": {"temperature": {"warning": {"max": "hot"}}}})
    assert h.reload("test") is False
    assert h.last_reload_error.startswith("thresholds.temperature.warning.max: Expected `float | null`")
    assert h.current.config.thresholds["temperature"].warning.max == 40 and seen == []
    assert sample(metrics, "pipeline_config_reload_ok") == 0
    f.write_text("mqtt: [unclosed\n")
    assert h.reload("test") is False and "invalid YAML" in h.last_reload_error
    write(f, BASE)
    assert h.reload("test") is True and h.last_reload_error is None
    assert sample(metrics, "pipeline_config_reload_ok") == 1


def test_restart_only_keys_are_reported_and_not_pushed_live(tmp_path):
    h, f, _metrics, seen = holder(tmp_path)
    write(f, {**BASE, "kafka": {"bootstrap_servers": "kafka-2:9092"}, "postgres": {"database": "other"}})
    assert h.reload("test") is True
    assert h.restart_required == ("kafka.bootstrap_servers", "postgres.database")
    assert seen == []  # nothing live changed: components are not disturbed
    write(f, BASE)  # reverted: nothing needs a restart any more
    h.reload("test")
    assert h.restart_required == ()


def test_unchanged_file_does_nothing(tmp_path):
    h, _f, metrics, seen = holder(tmp_path)
    assert h.reload("test") is True and seen == []
    assert sample(metrics, "pipeline_config_reloads_total", {"result": "unchanged"}) == 1


def test_changed_keys_and_live_classification():
    a = parse({"thresholds": {"temperature": {"warning": {"max": 40}}}}, {})
    b = parse({"thresholds": {"temperature": {"warning": {"max": 30}}, "humidity": {"warning": {"max": 80}}},
                   "detection": {"offline_after_s": 60}, "mqtt": {"port": 1884}}, {})
    keys = changed_keys(a, b)
    assert keys == ["detection.offline_after_s", "mqtt.port", "thresholds.humidity", "thresholds.temperature.warning.max"]
    assert [k for k in keys if not is_live(k)] == ["mqtt.port"]
    assert is_live("alerts.clear_readings") and not is_live("alerts.webhook.url") and not is_live("aggregation.periods")


def test_watcher_thread_reloads_on_file_change_and_on_request(tmp_path):
    h, f, _metrics, seen = holder(tmp_path)
    stop = threading.Event()
    t = threading.Thread(target=h.run, args=(stop, 0.1), daemon=True)
    t.start()
    try:
        time.sleep(0.05)
        write(f, {**BASE, "thresholds": {"temperature": {"warning": {"max": 35}}}})
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [c.thresholds["temperature"].warning.max for c in seen] == [35]
        # A request (what SIGHUP does) reloads even when the watcher would not look (interval 0 below).
        stop.set()
        t.join(2)
        stop2 = threading.Event()
        t2 = threading.Thread(target=h.run, args=(stop2, 0), daemon=True)
        t2.start()
        write(f, {**BASE, "thresholds": {"temperature": {"warning": {"max": 33}}}})
        time.sleep(0.5)
        assert len(seen) == 1  # not watching the file
        h.request_reload()
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen[-1].thresholds["temperature"].warning.max == 33
        stop2.set()
        t2.join(2)
    finally:
        stop.set()
