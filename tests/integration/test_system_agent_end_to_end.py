"""Host system metrics end to end: the agent (as a command and as a daemon thread) -> MQTT -> Kafka ->
validation -> `measurements`, with plausible values."""
from __future__ import annotations

import subprocess
import sys

from pipeline.agents.system import METRICS
from tests.integration.clients import RunningPipeline, wait_for
from tests.integration.conftest import ROOT

PERCENTS = ("cpu_percent", "mem_percent", "swap_percent", "disk_percent")


def samples(env, host: str) -> dict[str, list[float]]:
    rows = env.query("SELECT metric, value FROM measurements WHERE sensor_id = %s ORDER BY timestamp", (host,))
    out: dict[str, list[float]] = {}
    for metric, value in rows:
        out.setdefault(metric, []).append(value)
    return out


def assert_plausible(got: dict[str, list[float]]) -> None:
    for name in PERCENTS:
        assert all(0 <= v <= 100 for v in got[name]), (name, got[name])
    assert all(v > 0 for v in got["disk_percent"]) and all(v > 0 for v in got["mem_percent"])
    for name in ("load1", "load5", "load15", "net_rx_bytes_s", "net_tx_bytes_s", "net_rx_packets_s", "net_tx_packets_s"):
        assert all(v >= 0 for v in got[name]), (name, got[name])


def test_agent_command_publishes_a_few_intervals_into_measurements(env):
    settings = env.migrate()
    host = f"h{env.run_id}"
    with RunningPipeline(settings, env.metrics()):
        proc = subprocess.run([sys.executable, "-m", "pipeline.agents.system", "--interval", "0.5", "--count", "3",
                               "--host", host, "--topic-root", env.root, "--mqtt-host", "127.0.0.1"],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        assert "published=3 dropped=0 unacknowledged=0" in proc.stderr
        wait_for(lambda: len(samples(env, host).get("cpu_percent", [])) == 3, what="3 samples of cpu_percent")
    got = samples(env, host)
    assert set(got) == set(METRICS) and all(len(v) == 3 for v in got.values())
    assert_plausible(got)
    assert env.query("SELECT sensor_id, type, location FROM sensors") == [(host, "system", host)]
    stamps = env.query("SELECT DISTINCT timestamp FROM measurements ORDER BY 1")
    assert len(stamps) == 3 and all((b[0] - a[0]).total_seconds() > 0.3 for a, b in zip(stamps, stamps[1:]))


def test_daemon_runs_the_agent_for_its_own_host_and_its_metrics_get_windows_and_alerts(env):
    host = f"self-{env.run_id}"
    settings = env.migrate(env.settings(
        agents={"system": {"enabled": True, "interval_s": 0.5, "host": host, "topic_root": env.root}},
        aggregation={"periods": ["1s"], "grace_s": 0},
        thresholds={"mem_percent": {"warning": {"max": 0.01}}}))  # any host is above it: an alert must open
    metrics = env.metrics()
    with RunningPipeline(settings, metrics) as p:
        assert "agent-system" in p.supervisor.names()
        wait_for(lambda: len(samples(env, host).get("mem_percent", [])) >= 2, what="2 samples from the daemon's agent")
        wait_for(lambda: env.query("SELECT count(*) FROM aggregations WHERE sensor_id = %s AND metric = 'cpu_percent'",
                                   (host,))[0][0], what="a closed window of cpu_percent")
        alert = wait_for(lambda: env.query("SELECT type, severity FROM alerts WHERE sensor_id = %s AND metric = 'mem_percent'",
                                           (host,)), what="a mem_percent alert")
    assert alert == [("threshold", "warning")]
    assert_plausible(samples(env, host))
    rows = env.query("SELECT min_value, max_value, count FROM aggregations WHERE sensor_id = %s AND metric = 'cpu_percent'",
                     (host,))
    assert all(0 <= lo <= hi <= 100 and n >= 1 for lo, hi, n in rows)
    assert metrics.registry.get_sample_value("pipeline_system_agent_samples_total", {"outcome": "published"}) >= 2
    # Its spool reports a backlog (here empty: everything was acknowledged) and no drops.
    assert metrics.registry.get_sample_value("pipeline_spool_backlog_messages", {"source": "system_agent"}) == 0
    assert metrics.registry.get_sample_value("pipeline_spool_dropped_messages", {"source": "system_agent"}) == 0
    assert p.supervisor.liveness()["agent-system"] is False
