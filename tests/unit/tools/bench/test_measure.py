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
