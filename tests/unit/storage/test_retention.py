"""Which tables retention looks after and where it cuts, from config alone."""
from datetime import datetime, timezone

from pipeline import config as c
from pipeline.storage.retention import cutoff, targets


def test_targets_follow_config_and_zero_keeps_forever():
    cfg = c.parse({"retention": {"measurements_days": 0, "aggregations_days": {"1m": 7, "1h": 0}, "logs_days": 3}}, {})
    by_name = {t.name: t for t in targets(cfg.retention)}
    assert "measurements" not in by_name and "aggregations_1h" not in by_name
    assert (by_name["aggregations_1m"].days, by_name["aggregations_1m"].params) == (7, ("1m",))
    assert by_name["alerts"].time_column == "resolved_at" and by_name["alerts"].where == "resolved"
    assert (by_name["logs"].table, by_name["logs"].days) == ("logs", 3)


def test_default_targets_keep_aggregates_longer_than_raw_readings():
    by_name = {t.name: t.days for t in targets(c.parse({}, {}).retention)}
    assert by_name["measurements"] == 30 and min(by_name[f"aggregations_{p}"] for p in ("5m", "1h")) > 30


def test_cutoff_is_naive_utc():
    now = datetime(2026, 3, 31, 12, 0, tzinfo=timezone.utc)
    assert cutoff(now, 30) == datetime(2026, 3, 1, 12, 0)
    assert cutoff(now, 0.5) == datetime(2026, 3, 31, 0, 0)


def test_raw_retention_must_outlive_late_corrections():
    try:
        c.parse({"retention": {"measurements_days": 0.01}, "aggregation": {"max_lateness_s": 3600}}, {})
    except c.ConfigError as err:
        assert str(err).startswith("retention.measurements_days: must exceed")
    else:
        raise AssertionError("a raw retention shorter than the lateness bound was accepted")
