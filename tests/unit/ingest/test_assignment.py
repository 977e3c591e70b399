"""Group mode's watchdog: a consumer that waits for partitions in vain, told from one that is idle."""
from pipeline.ingest.assignment import AssignmentWatchdog


def test_the_watchdog_reports_a_stall_only_when_messages_wait_and_nobody_commits():
    w = AssignmentWatchdog(timeout_s=30, check_interval_s=5)
    w.assignment(0.0, False)
    assert not w.due(4.0) and w.due(5.0)
    assert w.observe(5.0, lag=100, committed_total=0) is None  # first look: a baseline
    assert w.observe(10.0, lag=150, committed_total=0) is None  # not waited long enough yet
    stall = w.observe(31.0, lag=200, committed_total=0)
    assert stall is not None and stall.lag == 200 and stall.unassigned_s == 31.0
    assert w.observe(36.0, lag=10, committed_total=40) is None  # another member consumes now
    w.observe(60.0, lag=10, committed_total=40)
    assert w.stall is not None  # and stopped again
    w.assignment(61.0, True)
    assert w.stall is None and not w.due(100.0)


def test_an_idle_member_without_partitions_is_not_stalled():
    w = AssignmentWatchdog(timeout_s=10, check_interval_s=2)
    w.assignment(0.0, False)
    for t in range(2, 60, 2):
        assert w.observe(float(t), lag=0, committed_total=500) is None  # nothing waits: other instances keep up
    for t in range(60, 120, 2):  # messages wait, but the group commits: someone else consumes them
        assert w.observe(float(t), lag=30, committed_total=500 + t) is None
