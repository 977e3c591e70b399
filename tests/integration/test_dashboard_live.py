"""The dashboard served by a running pipeline: health, readiness (and a real 503), the live numbers,
recent errors, a /metrics scrape that passes `promtool check metrics`, and a clean stop of the server."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from pipeline.app.daemon import Pipeline
from tests.integration.clients import Publisher, RunningPipeline, wait_for


def get(url: str) -> tuple[int, bytes, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def get_json(url: str) -> tuple[int, dict]:
    status, body, _ = get(url)
    return status, json.loads(body)


def promtool_check(text: bytes) -> subprocess.CompletedProcess:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed: run scripts/ensure-test-tools.sh (Debian package prometheus)")
    return subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)


def test_dashboard_of_a_running_pipeline(env):
    settings = env.migrate(env.settings(dashboard={"enabled": True, "port": 0, "probe_cache_s": 0.5}))
    metrics = env.metrics()
    root = env.root
    with RunningPipeline(settings, metrics) as pipeline:
        url = pipeline.dashboard.url
        status, health = get_json(url + "/health")
        assert status == 200 and health["status"] == "ok"
        assert {"dashboard", "dashboard-monitor", "kafka-consumer", "sink-postgres"} <= set(health["threads"])
        status, ready = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(get_json(url + "/ready")), 20,
                                 what="/ready to answer 200")
        assert ready["checks"]["kafka"]["ok"] and ready["checks"]["postgres"]["ok"] and ready["checks"]["mqtt"]["ok"]

        pub = Publisher()
        now = time.time()
        pub.publish_all([(f"{root}/s{i % 5}", json.dumps({"timestamp": now - 1 + i / 1000, "readings": {"temperature": 20 + i % 7,
                                                                                        "humidity": 50}}))
                         for i in range(200)] + [(f"{root}/s1", "{broken"), (f"{root}/s2", json.dumps({"metric": "temperature",
                                                                                                       "value": "hot"}))])
        pub.close()

        def live():
            status, body = get_json(url + "/api/pipeline")
            return body if status == 200 and body["totals"].get("written:postgres") == 400 and body["dead_letters"] else None

        body = wait_for(live, 30, what="400 readings written and dead letters counted")
        assert body["dead_letters"] == {"invalid_json": 1, "value_not_number": 1}
        assert body["deduplicated"] == {}  # nothing redelivered: nothing skipped
        assert {e["reason"] for e in body["recent_errors"]} >= {"invalid_json", "value_not_number"}
        broken = next(e for e in body["recent_errors"] if e["reason"] == "invalid_json")
        assert broken["sample"] == "{broken" and broken["stage"] == "decode" and broken["mqtt_topic"] == f"{root}/s1"
        assert body["queues"] == {"postgres": 0, "redis": 0, "dead_letter": 0, "logs": 0, "alerts": 0}

        # Throughput is a rate over the last seconds, sampled every second: the burst shows in the history.
        def burst_seen():
            status, body = get_json(url + "/api/pipeline?history=60")
            points = body["history"]
            return points if status == 200 and max(p["rates"].get("written:postgres", 0) for p in points) > 0 else None

        points = wait_for(burst_seen, 10, what="a history point with a write rate")
        assert max(p["rates"]["mqtt_received"] for p in points) > 0
        assert any((p["latency"].get("e2e:postgres") or {}).get("p95") for p in points)
        wait_for(lambda: get_json(url + "/api/pipeline")[1]["consumer_lag"]["partitions"], 15, what="consumer lag per partition")

        # A live scrape is valid Prometheus text and carries the new gauges.
        status, text, headers = get(url + "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert headers["Server"] == "realtime-pipeline"  # no server or Python versions given away
        check = promtool_check(text)
        assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
        scrape = text.decode()
        for line in ('pipeline_dependency_up{dependency="kafka"} 1.0', 'pipeline_dependency_up{dependency="postgres"} 1.0',
                     'pipeline_kafka_consumer_lag{partition="0"}', 'pipeline_sink_last_success_age_seconds{sink="postgres"}',
                     'pipeline_alerts_open_in_database{severity="critical"} 0.0', "pipeline_config_reload_ok 1.0",
                     'pipeline_dead_letters_total{kind="invalid",reason="invalid_json"} 1.0', "process_cpu_seconds_total"):
            assert line in scrape, line
        assert "s1" not in {label for line in scrape.splitlines() if "{" in line for label in line.split('"')[1::2]}

        status, sensors = get_json(url + "/api/sensors")
        assert status == 200 and sensors["total"] == 5

        # MQTT gone: readiness turns 503 and names it; liveness stays 200 (the process is fine).
        pipeline.bridge.client.disconnect()
        status, ready = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(get_json(url + "/ready")), 10,
                                 what="/ready to answer 503")
        assert ready["failing"] == ["mqtt"] and ready["problems"]["mqtt"].startswith("not connected to")
        assert get_json(url + "/health")[0] == 200

    # Pipeline.stop() shut the server down: nothing listens on the port any more.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", pipeline.dashboard.port), timeout=2).close()


def test_a_taken_port_fails_the_start(env):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        settings = env.settings(dashboard={"enabled": True, "port": blocker.getsockname()[1]})
        pipeline = Pipeline(settings, env.metrics())
        with pytest.raises(OSError):
            pipeline.start()
        assert pipeline.stop() == 0 and pipeline.supervisor.names() == []
    finally:
        blocker.close()
