"""A sink busy past the limit is reported once, and again when it ends; an injected clock, no waiting."""
from pipeline.runtime.busy import Busy, BusyWatch


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_long_write_is_reported_stuck_once_and_unstuck_when_it_ends():
    clock = Clock()
    pg, redis = Busy(clock), Busy(clock)
    watch = BusyWatch(after_s=30)
    check = lambda: watch.check([("postgres", pg.state), ("redis", redis.state)], clock.now)  # noqa: E731
    pg.begin("write")
    redis.begin("write")
    clock.now += 29
    assert check() == []
    redis.end()
    clock.now += 1
    assert check() == ["event=sink_stuck sink=postgres step=write busy_s=30.0"]
    clock.now += 60
    assert check() == []  # once per busy spell
    pg.end()
    clock.now += 1
    assert check() == ["event=sink_unstuck sink=postgres step=write busy_s=91.0"]
    assert check() == []


def test_a_new_spell_begun_between_checks_ends_the_old_report_and_waits_its_own_limit():
    clock = Clock()
    pg = Busy(clock)
    watch = BusyWatch(after_s=30)
    pg.begin("write")
    clock.now += 45
    assert watch.check([("postgres", pg.state)], clock.now) == ["event=sink_stuck sink=postgres step=write busy_s=45.0"]
    pg.end()
    clock.now += 5
    pg.begin("tick")
    assert watch.check([("postgres", pg.state)], clock.now) == ["event=sink_unstuck sink=postgres step=write busy_s=50.0"]
    clock.now += 30
    assert watch.check([("postgres", pg.state)], clock.now) == ["event=sink_stuck sink=postgres step=tick busy_s=30.0"]
