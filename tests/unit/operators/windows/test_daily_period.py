"""The `1d` period among the defaults: aligned to UTC midnight, rolled up from `1h`, closed once the day is over
(not before), kept by retention for its own number of days, and not the period the daemon's start-up reads the
recent metrics from (a day's row exists only once the day is over)."""
from datetime import datetime, timezone

from pipeline.app.daemon import lookback_period
from pipeline.config import parse
from pipeline.operators.windows.aggregator import rollup_sources
from pipeline.operators.windows.tracker import US, WindowTracker
from pipeline.storage.retention import targets


def test_defaults_hold_a_daily_period_with_its_retention():
    cfg = parse({}, {})
    assert cfg.aggregation.periods == ("1m", "5m", "1h", "1d")
    daily = [t for t in targets(cfg.retention) if t.name == "aggregations_1d"]
    assert len(daily) == 1 and daily[0].days == 3650 and daily[0].params == ("1d",)


def test_a_day_is_rolled_up_from_hours_and_closes_at_midnight_plus_grace():
    tracker = WindowTracker(("1m", "5m", "1h", "1d"), grace_s=10, idle_close_s=30)
    assert rollup_sources(tracker.sizes)["1d"] == "1h"
    ts = int(datetime(2026, 12, 6, 15, 42, tzinfo=timezone.utc).timestamp()) * US
    day = [w for w in tracker.windows(ts) if w.period == "1d"][0]
    assert day.start == int(datetime(2026, 12, 6, tzinfo=timezone.utc).timestamp()) * US
    assert day.end - day.start == 86400 * US
    tracker.add(0, day, "s1", "t")
    tracker.observe(0, ts, now=0.0)
    midnight = day.end
    tracker.observe(0, midnight + 5 * US, now=1.0)  # past midnight, within the grace: still open
    assert [d.window for d in tracker.due(1.0)] == []
    tracker.observe(0, midnight + 10 * US, now=2.0)
    assert [d.window for d in tracker.due(2.0)] == [day]


def test_start_up_reads_recent_metrics_from_the_longest_period_within_the_lookback():
    assert lookback_period(("1m", "5m", "1h", "1d"), 7200) == "1h"
    assert lookback_period(("1m", "5m", "1h", "1d"), 2 * 86400) == "1d"
    assert lookback_period(("1h", "1d"), 600) == "1h"  # none fits: the shortest
