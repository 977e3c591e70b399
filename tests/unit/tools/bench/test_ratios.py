"""The benchmark's ratios: the bare path's decoding, the peer comparison, the suite's targets and report."""
from pipeline.tools.bench import floor, ratios, suite
from pipeline.tools.bench.report import ratio_lines


def test_the_bare_path_reads_both_payload_shapes_without_checking_anything():
    assert floor.rows_of(b"s1", b'{"metric":"t","value":1.5,"timestamp":10.25,"seq":1}') == [("s1", "t", 1.5, 10.25)]
    assert floor.rows_of(b"s2", b'{"readings":{"a":1,"b":2},"timestamp":3,"seq":2}') == [("s2", "a", 1, 3), ("s2", "b", 2, 3)]


def catch_up(rows, cpu_s, elapsed_s, complete=True):
    return {"complete": complete, "rows": rows, "measured_rows": rows, "cpu_s": cpu_s, "elapsed_s": elapsed_s,
            "cpu_s_per_million_rows": round(cpu_s / rows * 1e6, 1), "rows_per_s": round(rows / elapsed_s, 1)}


def test_peer_report_compares_cpu_per_message_of_the_same_data():
    daemon, peer = catch_up(300_000, 6.0, 12.0), catch_up(300_000, 24.0, 30.0)
    r = ratios.peer_report(daemon, peer, readings_per_message=3)  # 100,000 messages of 3 readings
    assert r["daemon_cpu_s_per_million"] == 60.0 and r["cpu_s_per_million"] == 240.0 and r["ratio"] == 0.25
    assert r["sustained_rate"] == round(10_000 / 3, 1) and r["daemon_sustained_rate"] == round(25_000 / 3, 1)
    incomplete = ratios.peer_report(daemon, catch_up(1000, 1.0, 1.0, complete=False), 1)
    assert incomplete["cpu_s_per_million"] is None and incomplete["ratio"] is None  # no ratio from a partial run


def level(cpu, lost=0, dup=0, p99_redis=50.0, p99_pg=400.0, path="daemon", sustained=10000.0, drain_s=0.5):
    return {"path": path, "cpu_s_per_million": cpu, "lost": lost, "duplicated": dup, "offered_rate": 10000.0,
            "sustained_rate": sustained, "drain_after_load_s": drain_s,
            "latency_ms": {"redis": {"p99": p99_redis}, "pg": {"p99": p99_pg}}}


def test_suite_targets_are_ratios_of_one_run_and_every_daemon_level_counts_for_loss():
    one, best, at60, low = level(46.0, p99_pg=1200.0), level(40.0), level(45.0, p99_redis=120.0), level(90.0, dup=1)
    three = level(60.0, sustained=7300.0, drain_s=40.0)  # 3 readings did not hold the headline rate
    report = {"floor_cpu_s_per_million": 40.0, "peer": {"ratio": 0.4}, "at_60pct": at60, "low_rate": low, "idle_cores": 0.015}
    floor_level = level(40.0, lost=500, path="floor")  # the bare path dropping under overload: not the pipeline's loss
    f = suite.figures(report, one, three, best, [one, three, best, at60, low, floor_level])
    assert f["overhead_ratio"] == 1.15 and f["readings3_ratio"] == 1.304 and f["low_rate_ratio"] == 2.25
    assert f["readings3_shortfall"] == 0.27 and f["p99_redis_ms_at_headline"] == 50.0 and f["p99_pg_ms_at_headline"] == 1200.0
    assert f["p99_redis_ms_at_60pct"] == 120.0 and f["lost_or_duplicated"] == 1 and f["floor_lost"] == 500
    met = {name: suite.judge(name, f[name])["met"] for name in suite.TARGETS}
    assert met == {"overhead_ratio": True, "peer_ratio": True, "readings3_ratio": False, "readings3_shortfall": False,
                   "p99_redis_ms_at_headline": True, "p99_pg_ms_at_headline": False, "p99_redis_ms_at_60pct": False,
                   "low_rate_ratio": False, "idle_cores": True, "lost_or_duplicated": False}
    assert suite.figures(report, one, level(60.0), best, [one])["readings3_shortfall"] == 0.0  # held: nothing short
    assert suite.judge("overhead_ratio", None)["met"] is None  # not measured is not met, and not failed either


def test_ratio_lines_show_each_ratio_with_its_absolute_figures():
    report = {"machine": {"cpu": "X", "cores": 2, "memory_gib": 8.0, "python": "3.11", "load_avg_1m_at_start": 0.1},
              "floor": {"offered_rate": 1000, "cpu_s_per_million": 40.0, "sustained_rate": 999, "lost": 0, "duplicated": 0},
              "cpu_s_per_million": 60.0, "floor_cpu_s_per_million": 40.0, "overhead_ratio": 1.5}
    text = "\n".join(ratio_lines(report))
    assert "X, 2 cores" in text and "overhead ratio (daemon / bare path, CPU per message): 1.5 (60.0 / 40.0)" in text


def full_level(rate, cpu, readings=1):
    p = {"p50": 10.0, "p95": 20.0, "p99": 30.0, "max": 40.0}
    return {"path": "daemon", "offered_rate": rate, "sustained_rate": rate, "sustained_readings_per_s": rate * readings,
            "readings_per_message": readings, "instances": 1, "published": 100, "stored_pg": 100, "stored_redis": 100,
            "lost": 0, "duplicated": 0, "latency_ms": {"redis": p, "pg": p}, "cpu_s_per_million": cpu, "peak_rss_mb": 80.0,
            "max_consumer_lag": 5, "service_cores": {"kafka": 0.1, "postgres": 0.2}, "daemon_cores": 0.3,
            "generator_cores": 0.1, "daemon_threads": {"kafka-consumer": 0.1, "mqtt-network": 0.08},
            "deduplicated": {"redelivery": 0, "conflict": 0}, "drain_after_load_s": 0.1}


def test_suite_text_report_renders_every_level_ratio_and_target():
    one, three, top, at60, low = (full_level(10000, 50.0), full_level(10000, 70.0, 3), full_level(15000, 40.0),
                                  full_level(9000, 48.0), full_level(1000, 120.0))
    report = {"machine": {"cpu": "X", "cores": 2, "memory_gib": 8.0, "python": "3.11", "load_avg_1m_at_start": 0.1},
              "broker_limit_rate": 90000.0, "headline": one, "three_readings": three, "steps": [top], "at_60pct": at60,
              "low_rate": low, "max_sustainable_rate": 15000, "idle_cores": 0.012,
              "floor": full_level(10000, 35.0), "floor_cpu_s_per_million": 35.0}
    for r in (one, three, top, at60, low):
        r["overhead_ratio"] = round(r["cpu_s_per_million"] / 35.0, 3)
    report["figures"] = suite.figures(report, one, three, top, [one, three, top, at60, low])
    report["targets"] = {n: suite.judge(n, v) for n, v in report["figures"].items() if n in suite.TARGETS}
    one["broker"] = "fresh broker (started empty before this level)"
    text = suite.render(report)
    # Every level, the bare path's included, with the broker it ran on (--fresh-broker: each on an empty one).
    assert text.count("daemon threads at") == 6 and "overhead ratio (daemon / bare path, CPU per message): 1.429" in text
    assert text.count("Kafka broker at") == 6 and "Kafka broker at 10,000 msg/s (daemon): fresh broker" in text
    assert "low_rate_ratio" in text and "readings3_ratio" in text and "highest sustainable rate: 15000" in text
    assert report["targets"]["peer_ratio"]["met"] is None  # no peer in this report: not measured, shown as such
