"""Secrets given in the environment never show up in the daemon's log or in --check-config output."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import msgspec

from pipeline.config import KAFKA_SECRET_ENV, SECRET_ENV, Config, Secrets, is_secret_key
from tests.integration.clients import DaemonProcess, Publisher, wait_for

MARKERS = {
    "MQTT_PASSWORD": "mqtt-secret-7d1f",
    "POSTGRES_PASSWORD": "pg-secret-93ab",
    "REDIS_PASSWORD": "redis-secret-40ce",
    "DASHBOARD_TOKEN": "dash-secret-55e2",
    "KAFKA_SASL_PASSWORD": "kafka-secret-c0de",
    "KAFKA_SSL_KEY_PASSWORD": "kafka-key-secret-b17e",
}
# In every secret-bearing key and URL of the config file and in every secret variable of the environment; each
# copy names where it was put, so a leak says which one.
MARKER = "MARKER-5f3a"


def secret_named_text_keys(struct: type = Config, prefix: tuple = ()) -> list[tuple[str, ...]]:
    """Every text key of the schema whose name says secret (*password*, *secret*, *token*, sasl.*), at any depth."""
    found = []
    for field in msgspec.structs.fields(struct):
        if isinstance(field.type, type) and issubclass(field.type, msgspec.Struct):
            found += secret_named_text_keys(field.type, prefix + (field.name,))
        elif is_secret_key(field.name) and field.default == "":
            found.append(prefix + (field.name,))
    return found


def marked_config(env, path):
    extra = {"mqtt": {"username": "pipeline"},  # makes the bridge send MQTT_PASSWORD; local services ignore it
             "log_level": "DEBUG",
             # An alert (the reading below is above the temperature bound) is delivered to this URL and fails.
             "alerts": {"webhook": {"url": f"http://bot:{MARKER}-url-pass@127.0.0.1:9/hook/{MARKER}-url-path"
                                           f"?token={MARKER}-url-query#{MARKER}-url-fragment", "max_elapsed_s": 1.0}},
             "kafka": {"client": {"sasl.username": "pipeline", "sasl.password": f"{MARKER}-sasl.password",
                                  "sasl.oauthbearer.config": f"clientId=pipeline clientSecret={MARKER}-oauthbearer",
                                  "ssl.key.password": f"{MARKER}-ssl.key.password"}}}
    for key in secret_named_text_keys():  # none today; a secret key added to the schema later is covered
        node = extra
        for level in key[:-1]:
            node = node.setdefault(level, {})
        node[key[-1]] = f"{MARKER}-{'.'.join(key)}"
    return env.write_config(path, **extra)


def test_secrets_never_appear_in_logs_or_check_config(env, tmp_path, monkeypatch):
    env.migrate()
    config = marked_config(env, tmp_path / "config.yaml")
    for name in list(SECRET_ENV.values()) + list(KAFKA_SECRET_ENV):
        monkeypatch.setenv(name, f"{MARKER}-{name}")

    check = subprocess.run([sys.executable, "realtime_pipeline.py", "--config", str(config), "--check-config"],
                           capture_output=True, text=True, timeout=60, cwd=os.getcwd())
    assert check.returncode == 0, check.stderr
    out = check.stdout + check.stderr
    effective = json.loads(out.split("\n", 1)[1])
    assert effective["secrets"]["MQTT_PASSWORD"] == "***"
    assert effective["config"]["kafka"]["client"]["sasl.password"] == "***"
    assert effective["config"]["alerts"]["webhook"]["url"] == "http://***@127.0.0.1:9/***"  # where it goes: shown
    assert effective["config"]["mqtt"]["username"] == "pipeline"  # not a secret: shown

    log = tmp_path / "daemon.log"
    daemon = DaemonProcess(config, log).start()
    try:
        pub = Publisher()
        pub.publish(f"{env.root}/s-1", json.dumps({"metric": "temperature", "value": 99.0, "timestamp": time.time()}))
        pub.close()
        wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] == 1, what="the reading stored")
        wait_for(lambda: b"event=notification_failed" in log.read_bytes(), what="the alert's delivery failed")
        os.kill(daemon.proc.pid, signal.SIGHUP)  # a reload logs too
        wait_for(lambda: b"event=config_reload" in log.read_bytes(), what="reload logged")
    finally:
        code, _ = daemon.terminate(30)
    text = log.read_text()
    assert code == 0, daemon.log_tail()
    assert "event=starting version=" in text.splitlines()[0]  # the banner is the first line
    leaked = sorted({m for m in re.findall(rf"{MARKER}[\w.-]*", text + out)})
    assert leaked == []


def test_secrets_never_appear_in_dashboard_output(env):
    """Every read endpoint of a running pipeline whose secrets are all set to marker values."""
    import urllib.error
    import urllib.request

    from msgspec.structs import replace

    from tests.integration.clients import RunningPipeline

    settings = env.migrate(env.settings(dashboard={"enabled": True, "port": 0, "probe_cache_s": 0.5},
                                        mqtt={"username": "pipeline"}))
    markers = {name: value for name, value in MARKERS.items() if name in SECRET_ENV.values()}
    markers.pop("DASHBOARD_TOKEN", None)  # the token is needed to read when reads require it; it is not read back
    settings = replace(settings, secrets=Secrets.from_env(markers))
    with RunningPipeline(settings, env.metrics()) as pipeline:
        pub = Publisher()
        pub.publish_all([(f"{env.root}/dev-1", '{"metric": "temperature", "value": 21.5}'), (f"{env.root}/dev-1", "{bad")])
        pub.close()
        time.sleep(2)
        bodies = []
        for path in ("/", "/alerts", "/health", "/ready", "/metrics", "/api/pipeline", "/api/sensors", "/api/sensors/dev-1",
                     "/api/alerts?status=all", "/api/sensors/dev-1/trend?metric=temperature&period=1m"):
            try:
                with urllib.request.urlopen(pipeline.dashboard.url + path, timeout=10) as r:
                    bodies.append(r.read().decode("utf-8", "replace"))
            except urllib.error.HTTPError as err:  # /ready may be 503 while a probe settles: its body counts too
                bodies.append(err.read().decode("utf-8", "replace"))
    text = "\n".join(bodies)
    assert "temperature" in text  # the endpoints really answered with data
    assert [name for name, value in markers.items() if value in text] == []
