"""The system agent's pure parts: CPU and rates from two samples, host names, the message contract."""
import subprocess
import sys
import threading
from collections import namedtuple

import orjson
import pytest

from pipeline.agents.system import METRICS, Sample, SystemAgent, cpu_split, message, readings, sanitize_host, take_sample
from pipeline.records import Reading
from pipeline.stages.validate import check_metric
from tests.unit.helpers import NOW, chain, raw, run

Times = namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")


def sample(at, total=1000.0, busy=100.0, net=(1000, 2000, 10, 20), load=(0.5, 0.25, 0.125), mem=40.0, swap=0.0,
           disk=55.5):
    return Sample(at, total, busy, load, mem, swap, disk, net)


def test_cpu_split_counts_like_psutil():
    t = Times(user=10, nice=1, system=4, idle=80, iowait=3, irq=1, softirq=1, steal=0, guest=2, guest_nice=1)
    total, busy = cpu_split(t)
    assert (total, busy) == (100, 17)  # guest already inside user/nice; idle and iowait are not busy


def test_readings_from_two_samples():
    prev = sample(100.0)
    cur = sample(102.0, total=1010.0, busy=107.5, net=(3000, 2500, 30, 21))
    assert readings(prev, cur) == {
        "cpu_percent": 75.0, "load1": 0.5, "load5": 0.25, "load15": 0.125, "mem_percent": 40.0,
        "swap_percent": 0.0, "disk_percent": 55.5, "net_rx_bytes_s": 1000.0, "net_tx_bytes_s": 250.0,
        "net_rx_packets_s": 10.0, "net_tx_packets_s": 0.5}


def test_counter_going_backwards_gives_no_rate_and_missing_values_are_left_out():
    prev = sample(100.0)
    cur = sample(101.0, total=1000.0, busy=100.0, net=(500, 2100, 12, 25), load=None, disk=None)
    out = readings(prev, cur)
    assert "net_rx_bytes_s" not in out and out["net_tx_bytes_s"] == 100.0  # rx counter reset (interface restarted)
    assert "cpu_percent" not in out  # no CPU time passed
    assert "load1" not in out and "disk_percent" not in out
    assert readings(sample(5.0), sample(5.0))["mem_percent"] == 40.0  # no time passed: gauges only
    assert "net_rx_bytes_s" not in readings(sample(5.0), sample(5.0))


def test_cpu_percent_is_clamped():
    assert readings(sample(0.0), sample(1.0, total=1010.0, busy=130.0))["cpu_percent"] == 100.0


@pytest.mark.parametrize("name, expected", [
    ("web-01.example.com", "web-01.example.com"),
    ("My Laptop (2)", "My-Laptop--2-"),
    ("-leading", "leading"),
    ("höst", "h-st"),
    ("", "host"),
    ("x" * 80, "x" * 50),
])
def test_sanitize_host(name, expected):
    assert sanitize_host(name) == expected


def test_metric_names_satisfy_the_metric_rule():
    assert all(check_metric(m) == m for m in METRICS)


def test_message_is_a_valid_reading_message_for_the_pipeline():
    values = {m: float(i) for i, m in enumerate(METRICS)}
    ch = chain()[0]
    out, dead = run(ch, raw("system/web-01", message("web-01", NOW - 1, values)))
    assert dead == []
    assert {(r.sensor_id, r.sensor_type, r.location, r.metric, r.value, r.ts) for r in out} == {
        ("web-01", "system", "web-01", m, float(i), NOW - 1) for i, m in enumerate(METRICS)}
    assert all(isinstance(r, Reading) for r in out)


def test_take_sample_reads_this_host():
    s = take_sample("/")
    assert s.cpu_total > 0 and 0 <= s.cpu_busy <= s.cpu_total
    assert 0 <= s.mem_percent <= 100 and 0 <= s.swap_percent <= 100 and 0 < s.disk_percent <= 100
    assert take_sample("/no/such/path").disk_percent is None


class ListPublisher:
    def __init__(self, accept=True):
        self.messages, self.accept = [], accept

    def publish(self, topic, payload):
        self.messages.append((topic, orjson.loads(payload)))
        return self.accept


def test_agent_publishes_every_interval_after_priming_and_counts_refusals():
    pub = ListPublisher()
    outcomes = []
    agent = SystemAgent(pub, host="my host", topic_root="sysroot", interval_s=0.1, on_publish=outcomes.append)
    agent.run(threading.Event(), count=3)
    assert [t for t, _ in pub.messages] == ["sysroot/my-host"] * 3 and outcomes == [True] * 3
    body = pub.messages[-1][1]
    assert body["type"] == "system" and body["location"] == "my-host" and set(body["readings"]) >= {"cpu_percent", "mem_percent"}
    refused = SystemAgent(ListPublisher(accept=False), host="h", interval_s=0.1)
    stop = threading.Event()
    threading.Timer(0.35, stop.set).start()
    refused.run(stop)
    assert refused.published == 0 and refused.dropped >= 2


def test_cli_refuses_bad_arguments():
    for args in (["--interval", "0.01"], ["--topic-root", "a/b"]):
        proc = subprocess.run([sys.executable, "-m", "pipeline.agents.system", *args], capture_output=True, text=True,
                              timeout=30)
        assert proc.returncode == 2 and args[0] in proc.stderr


def test_cli_tls_options_are_the_daemon_mqtt_tls_settings():
    from pipeline.agents.system import parse_args, tls_settings
    from pipeline.config import TlsConfig

    args = parse_args(["--tls", "--ca-file", "ca.pem", "--cert-file", "c.pem", "--key-file", "c.key", "--insecure"])
    assert tls_settings(args) == TlsConfig(enabled=True, ca_file="ca.pem", cert_file="c.pem", key_file="c.key",
                                           insecure=True)
    assert args.mqtt_port == 8883  # the usual TLS port unless --mqtt-port says otherwise
    plain = parse_args([])
    assert tls_settings(plain) == TlsConfig() and plain.mqtt_port == 1883
    assert parse_args(["--tls", "--mqtt-port", "1884"]).mqtt_port == 1884
    for flag in (["--ca-file", "ca.pem"], ["--insecure"]):  # never quietly in clear
        with pytest.raises(SystemExit):
            parse_args(flag)


def test_a_missing_tls_file_is_an_error_before_any_connection():
    proc = subprocess.run([sys.executable, "-m", "pipeline.agents.system", "--tls", "--ca-file", "/nonexistent/ca.pem"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "tls: cannot use the certificate files" in proc.stderr
