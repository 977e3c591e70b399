"""Partition ranges, names, gaps and expiry from timestamps alone; the rebuild's plan of windows."""
from datetime import datetime, timedelta

import psycopg
import pytest

from pipeline import config as c
from pipeline.storage.partitions import Partition, expired, is_missing_partition, parse_bound, partition_name, span, uncovered, wanted
from pipeline.operators.windows.rebuild import chunks, plan
from pipeline.tools.rebuild import parse_time

D = datetime(2026, 12, 1)


def test_spans_align_to_utc_midnight_and_weeks_to_monday():
    assert span(datetime(2026, 12, 1, 23, 59, 59), "1d") == (D, D + timedelta(days=1))
    assert span(datetime(2026, 12, 1, 7, 30), "6h") == (datetime(2026, 12, 1, 6), datetime(2026, 12, 1, 12))
    monday = span(datetime(2026, 12, 3, 12), "7d")[0]
    assert monday == datetime(2026, 11, 30) and monday.weekday() == 0
    assert span(datetime(1969, 12, 31, 1), "1d")[0] == datetime(1969, 12, 31)  # before the origin too


def test_names_sort_by_time_and_show_the_hour_below_a_day():
    assert partition_name("measurements", D, "1d") == "measurements_p20261201"
    assert partition_name("logs", datetime(2026, 12, 1, 6), "6h") == "logs_p20261201_06"


def test_wanted_is_the_previous_current_and_ahead_ranges():
    got = wanted(datetime(2026, 12, 1, 13), "1d", 3)
    assert [lo for lo, _ in got] == [D + timedelta(days=k) for k in range(-1, 4)]


def test_uncovered_clips_against_existing_partitions_and_the_unbounded_old_table():
    legacy = Partition("m_legacy", None, D + timedelta(hours=12))
    today = (D, D + timedelta(days=1))
    assert uncovered([today], [legacy]) == [(D + timedelta(hours=12), D + timedelta(days=1))]
    assert uncovered([today], [Partition("m_p", D, D + timedelta(days=1))]) == []
    week = [(D - timedelta(days=1), D + timedelta(days=6))]
    assert uncovered(week, [Partition("m_p", D, D + timedelta(days=1))]) == [
        (D - timedelta(days=1), D), (D + timedelta(days=1), D + timedelta(days=6))]


def test_only_wholly_expired_partitions_go_and_only_the_old_table_is_trimmed():
    days = [Partition(f"p{k}", D + timedelta(days=k), D + timedelta(days=k + 1)) for k in range(5)]
    cutoff = D + timedelta(days=2, hours=6)  # inside p2
    whole, straddling = expired(days, cutoff)
    assert [p.name for p in whole] == ["p0", "p1"] and straddling is None  # p2 is kept whole until wholly expired
    legacy = Partition("legacy", None, D + timedelta(days=3))
    whole, straddling = expired([legacy, *days[3:]], cutoff)
    assert whole == [] and straddling == legacy
    assert expired([legacy], D + timedelta(days=3))[0] == [legacy]


def test_bounds_are_read_from_the_catalogue_text():
    p = parse_bound("FOR VALUES FROM ('2026-12-01 00:00:00') TO ('2026-12-02 00:00:00')", "m_p20261201")
    assert (p.lower, p.upper) == (D, D + timedelta(days=1))
    legacy = parse_bound("FOR VALUES FROM (MINVALUE) TO ('2026-12-01 00:00:00')", "m_legacy")
    assert legacy.lower is None and legacy.upper == D
    with pytest.raises(ValueError):
        parse_bound("DEFAULT", "m_default")


def test_a_missing_partition_is_told_apart_from_other_check_violations():
    assert is_missing_partition(psycopg.errors.CheckViolation('no partition of relation "measurements" found for row'))
    assert not is_missing_partition(psycopg.errors.CheckViolation('new row violates check constraint "x"'))


def test_storage_config_defaults_and_refuses_other_intervals():
    assert (c.parse({}, {}).storage.partition_interval, c.parse({}, {}).storage.partitions_ahead) == ("1d", 3)
    with pytest.raises(c.ConfigError, match=r"^storage.partition_interval: "):
        c.parse({"storage": {"partition_interval": "1mon"}}, {})
    with pytest.raises(c.ConfigError, match=r"^storage.partitions_ahead: "):
        c.parse({"storage": {"partitions_ahead": 0}}, {})


def test_rebuild_plans_shortest_period_first_with_the_daemons_rollups_in_chunks_of_whole_windows():
    steps = plan(("1m", "5m", "1h"), None, D, D + timedelta(minutes=90))
    assert [(s.period, s.start, s.end, s.sub_period) for s in steps] == [
        ("1m", D, D + timedelta(hours=1), None), ("1m", D + timedelta(hours=1), D + timedelta(minutes=90), None),
        ("5m", D, D + timedelta(hours=1), "1m"), ("5m", D + timedelta(hours=1), D + timedelta(minutes=90), "1m"),
        ("1h", D, D + timedelta(hours=1), "5m"), ("1h", D + timedelta(hours=1), D + timedelta(hours=2), "5m")]
    assert sum(s.windows for s in steps) == 90 + 18 + 2
    alone = plan(("1m", "5m"), "5m", D, D + timedelta(minutes=10), chunk_s=300)
    assert [(s.start, s.sub_period, s.windows) for s in alone] == [(D, None, 1), (D + timedelta(minutes=5), None, 1)]
    # Windows overlapping the range are rebuilt whole; a chunk is never shorter than one window.
    assert list(chunks(D + timedelta(seconds=30), D + timedelta(seconds=61), 60, 1)) == [
        (D, D + timedelta(minutes=1)), (D + timedelta(minutes=1), D + timedelta(minutes=2))]


def test_rebuild_times_are_utc():
    assert parse_time("2026-12-01") == D
    assert parse_time("2026-12-01T01:00:00+01:00") == D
    assert parse_time(str((D - datetime(1970, 1, 1)).total_seconds())) == D


class _Ticks:
    """A stop event whose wait() records the delay and lets `ticks` intervals pass before stopping."""

    def __init__(self, ticks: int):
        self.ticks, self.delays = ticks, []

    def wait(self, delay: float) -> bool:
        self.delays.append(delay)
        self.ticks -= 1
        return self.ticks < 0


def test_the_daemons_partition_job_checks_every_interval_and_retries_a_failure_within_a_minute():
    from pipeline.storage.partitions import PartitionJob
    from pipeline.config import Secrets, Settings

    settings = Settings(c.parse({"storage": {"check_interval_s": 600}}, {}), Secrets.from_env({}), "test")
    calls = []

    class Job(PartitionJob):
        def run_once(self):
            calls.append(len(calls))
            if len(calls) == 2:
                raise psycopg.OperationalError("server closed the connection")
            return []

    from prometheus_client import CollectorRegistry
    from pipeline.observability.metrics import Metrics

    metrics = Metrics(CollectorRegistry())
    stop = _Ticks(3)
    Job(settings, metrics).run(stop)
    assert calls == [0, 1, 2] and stop.delays == [600, 600, 60, 600]
    assert metrics.registry.get_sample_value("pipeline_storage_partition_checks_total", {"result": "failed"}) == 1
