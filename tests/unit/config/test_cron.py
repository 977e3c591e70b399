"""The cron matcher of maintenance windows: fields, ranges, steps, lists, names, the day rule, last_start."""
from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from pipeline.config.cron import Cron, CronError

UTC = ZoneInfo("UTC")


def at(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def test_fields_ranges_steps_lists_and_names():
    c = Cron.parse("*/15 8-17/2 * jan,jul mon-fri")
    assert c.minutes == frozenset({0, 15, 30, 45})
    assert c.hours == frozenset({8, 10, 12, 14, 16})
    assert c.days is None and c.months == frozenset({1, 7}) and c.weekdays == frozenset({1, 2, 3, 4, 5})
    assert Cron.parse("5,10-12 * * * *").minutes == frozenset({5, 10, 11, 12})
    assert Cron.parse("0 0 * * 7").weekdays == frozenset({0})  # 7 is Sunday too
    assert Cron.parse("10/20 * * * *").minutes == frozenset({10, 30, 50})


def test_matches_minute_and_the_either_day_rule():
    sunday_2am = Cron.parse("0 2 * * 0")
    assert sunday_2am.matches(at(2026, 12, 6, 2, 0))
    assert not sunday_2am.matches(at(2026, 12, 6, 2, 1))
    assert not sunday_2am.matches(at(2026, 12, 7, 2, 0))
    first_or_monday = Cron.parse("0 0 1 * mon")  # both restricted: either one
    assert first_or_monday.matches(at(2026, 12, 1, 0, 0))  # a Tuesday, the 1st
    assert first_or_monday.matches(at(2026, 12, 7, 0, 0))  # a Monday
    assert not first_or_monday.matches(at(2026, 12, 8, 0, 0))
    only_first = Cron.parse("0 0 1 * *")
    assert not only_first.matches(at(2026, 12, 7, 0, 0))


@pytest.mark.parametrize("text, needle", [("0 2 * *", "5 fields"), ("60 * * * *", "minute"), ("* 24 * * *", "hour"),
                                          ("* * 0 * *", "day of month"), ("* * * 13 *", "month"),
                                          ("* * * * 8", "day of week"), ("*/0 * * * *", "step"),
                                          ("5-1 * * * *", "backwards"), ("x * * * *", "not a number")])
def test_bad_expressions_name_the_field(text, needle):
    with pytest.raises(CronError) as err:
        Cron.parse(text)
    assert needle in str(err.value)


def test_last_start_within_the_horizon():
    c = Cron.parse("0 2 * * 0")
    now = at(2026, 12, 6, 2, 30).timestamp()
    assert c.last_start(now, UTC, 3600) == at(2026, 12, 6, 2, 0).timestamp()
    assert c.last_start(at(2026, 12, 6, 2, 0).timestamp(), UTC, 3600) == at(2026, 12, 6, 2, 0).timestamp()
    assert c.last_start(at(2026, 12, 6, 3, 30).timestamp(), UTC, 3600) is None  # 90 minutes ago: beyond one hour
    assert c.last_start(at(2026, 12, 9, 12, 0).timestamp(), UTC, 7 * 86400) == at(2026, 12, 6, 2, 0).timestamp()
    every = Cron.parse("* * * * *")
    assert every.last_start(at(2026, 12, 6, 2, 30, 15).timestamp(), UTC, 60) == at(2026, 12, 6, 2, 30).timestamp()
