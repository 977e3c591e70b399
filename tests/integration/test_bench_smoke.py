"""A short run of the benchmark: the report is produced with every figure, nothing lost or doubled.
The speed targets are checked by running the benchmark (make bench), not here."""
import json
import subprocess
import sys

import pytest

from tests.integration.conftest import ROOT

KEYS = {"offered_rate", "sustained_rate", "published", "stored_pg", "stored_redis", "lost", "duplicated", "latency_ms",
        "cpu_s_per_million", "peak_rss_mb", "broker_limit_rate", "ratio_to_limit", "consumer_lag", "deduplicated"}


@pytest.mark.long
def test_benchmark_smoke_run_reports_every_figure_and_loses_nothing():
    proc = subprocess.run([sys.executable, "-m", "pipeline.tools.bench", "--rate", "1000", "--duration", "5", "--sensors", "50",
                           "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert KEYS <= set(report)
    assert report["published"] == 5000 and report["stored_pg"] == 5000 and report["stored_redis"] == 5000
    assert report["lost"] == 0 and report["duplicated"] == 0
    assert report["deduplicated"] == {"redelivery": 0, "conflict": 0}  # read from the stopped daemon's own count
    for sink in ("redis", "pg"):
        assert set(report["latency_ms"][sink]) == {"p50", "p95", "p99", "max"}
        assert 0 < report["latency_ms"][sink]["p50"] <= report["latency_ms"][sink]["max"]
    assert report["broker_limit_rate"] > 0 and report["cpu_s_per_million"] > 0 and report["peak_rss_mb"] > 0
    # Where the machine's time went: each service found by its listening port, and latency over the run.
    assert set(report["service_cores"]) == {"kafka", "postgres", "redis", "mosquitto"}
    assert all(c is not None and c >= 0 for c in report["service_cores"].values()) and report["daemon_cores"] > 0
    assert sum(b["entries"] for b in report["redis_latency_over_time"]) == 5000


# Three processes side by side for about a minute: the `faults` tier's (tests of tens of seconds), so make test-fast
# stays quick; make test runs it.
@pytest.mark.faults
def test_bare_path_and_peer_run_beside_the_daemon_report_their_ratios_and_lose_nothing():
    proc = subprocess.run([sys.executable, "-m", "pipeline.tools.bench", "--rate", "1000", "--duration", "5", "--sensors", "50",
                           "--floor", "--peer", "quix", "--json"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert {"machine", "floor", "floor_cpu_s_per_million", "overhead_ratio", "peer"} <= set(report)
    assert {"cpu", "cores", "memory_gib", "python"} <= set(report["machine"]) and report["machine"]["cores"] >= 1
    floor = report["floor"]
    assert floor["path"] == "floor" and floor["published"] == 5000
    assert floor["stored_pg"] == 5000 and floor["stored_redis"] == 5000 and floor["lost"] == 0 and floor["duplicated"] == 0
    assert report["floor_cpu_s_per_million"] > 0
    assert report["overhead_ratio"] == round(report["cpu_s_per_million"] / report["floor_cpu_s_per_million"], 3)
    peer = report["peer"]
    assert peer["name"] == "quixstreams"
    # Both worked through the first level's topic to the last reading: nothing lost on either side.
    for side in ("peer_catch_up", "daemon_catch_up"):
        assert peer[side]["complete"] and peer[side]["stored"] == 5000, side
        assert peer[side]["lost"] == 0 and peer[side]["duplicated"] == 0, side
    assert peer["cpu_s_per_million"] > 0 and peer["daemon_cpu_s_per_million"] > 0 and peer["sustained_rate"] > 0
    assert peer["ratio"] == round(peer["daemon_cpu_s_per_million"] / peer["cpu_s_per_million"], 3)


@pytest.mark.faults  # a daemon's flood and release, 16 s: out of make test-fast
def test_flood_of_new_series_reports_rss_before_peak_and_after_the_release():
    proc = subprocess.run([sys.executable, "-m", "pipeline.tools.bench.flood", "--sensors", "20", "--metrics", "5",
                           "--idle-s", "3", "--settle-s", "1", "--set", "aggregation.idle_close_s=2", "--json"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["series"] == 100 and report["readings"] == 200  # two rounds, every reading stored
    assert 0 < report["rss_before_mb"] <= report["rss_peak_mb"] and report["rss_after_mb"] > 0
    assert report["growth_mb"] >= 0 and report["bytes_per_series"] >= 0
    assert report["windows_pending_after"] == 0  # every window of the flood that ended closed, so its state could go
    assert set(report["windows_open_after"]) <= {"1d"}  # only the day the flood is in may still be open


@pytest.mark.faults  # every level of `make bench`, a few seconds each, and the idle daemon's 35 s: out of make test-fast
def test_the_suite_on_a_broker_of_its_own_starts_it_empty_before_every_level_and_says_so():
    proc = subprocess.run([sys.executable, "-m", "pipeline.tools.bench", "--suite", "--fresh-broker", "--rate", "1000",
                           "--duration", "3", "--max-duration", "3", "--step", "1.5", "--max-rate", "1400",
                           "--sensors", "50", "--json"], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    levels = [report["headline"], report["floor"], report["three_readings"], *report["steps"], report["low_rate"],
              *([report["at_60pct"]] if report.get("at_60pct") else [])]
    assert all(r["broker"].startswith("fresh broker") for r in levels), [r["broker"] for r in levels]
    assert report["idle_broker"].startswith("fresh broker") and report["peer"]["broker"].startswith("fresh broker")
    # The peer read the headline's topic before the broker was started again for the next level.
    assert report["peer"]["peer_catch_up"]["complete"] and report["peer"]["daemon_catch_up"]["complete"]
    assert report["figures"]["lost_or_duplicated"] == 0
    assert "started again before each level" in proc.stderr


def test_the_benchmarks_own_broker_is_empty_again_after_a_restart(tmp_path):
    from confluent_kafka.admin import AdminClient, NewTopic

    from pipeline.tools.bench.broker import OwnBroker

    broker = OwnBroker(tmp_path).start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("bench.level0.raw", num_partitions=2)])["bench.level0.raw"].result(15)
        assert "bench.level0.raw" in admin.list_topics(timeout=10).topics
        broker.restart()  # the next level's broker: same port, nothing of the last level
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        assert "bench.level0.raw" not in admin.list_topics(timeout=10).topics and broker.starts == 2
    finally:
        broker.stop()
