"""The benchmark's pure helpers: percentiles and latency over time."""
from pipeline.tools.bench.measure import latency_over_time, percentiles


def test_percentiles_in_milliseconds():
    p = percentiles([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert p == {"p50": 51.0, "p95": 96.0, "p99": 100.0, "max": 100.0}
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None, "max": None}


def test_latency_over_time_buckets_entries_by_when_they_were_read():
    arrivals = [100.5, 101.0, 104.9, 105.0, 112.0]
    latencies = [0.010, 0.020, 0.030, 0.500, 0.040]
    assert latency_over_time(arrivals, latencies, start=100.0) == [
        {"t_s": 0.0, "entries": 3, "p50": 20.0, "p99": 30.0},
        {"t_s": 5.0, "entries": 1, "p50": 500.0, "p99": 500.0},
        {"t_s": 10.0, "entries": 1, "p50": 40.0, "p99": 40.0},
    ]


def test_the_broker_cores_are_sampled_over_the_level_and_reported_as_growth():
    import subprocess
    import sys
    import time

    from pipeline.tools.bench.measure import ServiceCpu
    from pipeline.tools.bench.report import table

    # A process standing in for the broker: on a word from the test it burns 0.3 s of CPU (not of wall time, so a
    # loaded machine only stretches it), says so, then sleeps.
    spinner = subprocess.Popen([sys.executable, "-c", "import sys, time\nsys.stdin.readline()\n"
                                "t = time.process_time() + 0.3\nwhile time.process_time() < t: pass\n"
                                "print('done', flush=True)\ntime.sleep(30)"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        services = ServiceCpu({})
        services.pids = {"kafka": spinner.pid}
        started = time.time()
        services.begin(sample_s=0.1)
        spinner.stdin.write("go\n")
        spinner.stdin.flush()
        assert spinner.stdout.readline().strip() == "done"
        time.sleep(0.5)  # idle samples after the burn
        cores = services.cores()
        elapsed = time.time() - started
    finally:
        spinner.kill()
        spinner.wait()
    samples = services.kafka_over_time
    assert len(samples) >= 4 and samples[-1][1] < 0.1  # busy, then idle
    assert max(c for _, c in samples) > 0.05
    assert 0.2 < cores["kafka"] * elapsed < 0.6
    level = {"offered_rate": 6000.0, "sustained_rate": 5950.0, "sustained_readings_per_s": 5950.0, "published": 1,
             "stored_pg": 1, "stored_redis": 1, "lost": 0, "duplicated": 0, "cpu_s_per_million": 70.0,
             "peak_rss_mb": 100.0, "max_consumer_lag": 10, "daemon_cores": 0.4, "generator_cores": 0.1,
             "instances": 1, "service_cores": {"kafka": 0.3}, "broker": "fresh broker",
             "latency_ms": {k: {"p50": 1, "p95": 2, "p99": 3, "max": 4} for k in ("redis", "pg")},
             "kafka_cores_over_time": [(5.0, 0.26), (10.0, 0.41), (40.0, 0.71)]}
    assert "fresh broker; its cores per 5 s 0.26 -> 0.71" in table([level], 80000.0)
