"""Log-count windows: which windows are due, late records recount, zero-filled rows, new vs corrected."""
from pipeline.operators.logcounts.counting import CountWindows, changes, count_rows

W = 60.0
T0 = 1_760_000_040.0  # a window start (multiple of 60)


def windows(**kw):
    return CountWindows(W, kw.pop("grace", 10.0), kw.pop("active", 3600.0), **kw)


def test_windows_are_aligned_to_the_epoch():
    w = windows()
    assert w.window_of(T0) == T0 and w.window_of(T0 + 59.999) == T0 and w.window_of(T0 - 0.001) == T0 - W


def test_nothing_is_due_before_begin():
    w = windows()
    w.mark("a", T0)
    assert w.due(T0 + 1000) == []


def test_each_window_is_due_once_after_its_end_plus_grace():
    w = windows(active=120)  # lookback of two windows
    w.begin(T0 + 15, {})
    assert w.due(T0 + 15) == [T0 - 2 * W, T0 - W]  # the lookback windows, already closed
    assert w.due(T0 + 69.9) == []  # T0's window ends at T0+60, grace 10
    assert w.due(T0 + 70) == [T0]
    assert w.due(T0 + 71) == []
    assert w.due(T0 + 200) == [T0 + W, T0 + 2 * W]  # a late tick catches up, in order


def test_a_late_record_makes_its_counted_window_due_again():
    w = windows(active=60)
    w.begin(T0 + 1, {})
    w.due(T0 + 70)  # T0 counted
    w.mark("a", T0 + 30)  # arrives after T0 was counted
    w.mark("a", T0 + 75)  # window T0+60 is still open: counted when it closes, not twice
    assert w.due(T0 + 71) == [T0]
    assert w.due(T0 + 72) == []
    assert w.due(T0 + 130) == [T0 + W]


def test_lookback_is_bounded():
    w = CountWindows(1.0, 0.0, 3600.0, max_lookback_windows=5)
    w.begin(T0, {})
    assert w.due(T0) == [T0 - 5, T0 - 4, T0 - 3, T0 - 2, T0 - 1]


def test_active_apps_and_forgetting():
    w = windows(active=300)
    w.begin(T0, {"old": (T0 - 1100, T0 - 1000), "recent": (T0 - 200, T0 - 100)})
    w.mark("new", T0 + 10)
    w.mark("new", T0 + 5)  # an older record does not move last_seen back
    assert w.last_seen["new"] == T0 + 10
    assert w.active(T0) == ["new", "recent"]  # old: nothing in the 300 s before T0's end
    assert w.active(T0 + 240) == ["new"]  # recent: nothing in the 300 s before T0+300
    w.due(T0 + 350)
    assert set(w.last_seen) == set(w.first_seen) == {"new"}  # the others cannot be active any more: forgotten


def test_an_app_gets_no_rows_for_windows_before_its_first_record():
    # A new app logging now is not given `active_s` of zero rows before it existed: once counted at a
    # start's catch-up, those made the counter fall minutes behind the records.
    w = windows(active=300)
    w.begin(T0, {"known": (T0 - 250, T0 - 10)})
    w.mark("new", T0 + 5)
    assert w.active(T0 - 4 * W) == ["known"]  # known: its first record is in this window
    assert w.active(T0 - W) == ["known"]
    assert w.active(T0) == ["known", "new"]
    w.mark("new", T0 - 2 * W + 1)  # a late, older record moves its first window back
    assert w.active(T0 - 2 * W) == ["known", "new"]


def test_count_rows_zero_fills_every_level_of_active_and_counted_apps():
    rows = count_rows({("a", "ERROR"): 3, ("b", "INFO"): 1}, ["a", "c"])
    assert len(rows) == 15
    assert rows[("app:a", "log_error")] == 3.0 and rows[("app:a", "log_info")] == 0.0
    assert rows[("app:b", "log_info")] == 1.0 and rows[("app:b", "log_critical")] == 0.0
    assert all(v == 0.0 for (s, _), v in rows.items() if s == "app:c")
    assert count_rows({}, []) == {}


def test_changes_splits_new_and_corrected_and_drops_unchanged():
    rows = {("app:a", "log_error"): 3.0, ("app:a", "log_info"): 0.0, ("app:a", "log_debug"): 2.0}
    stored = {("app:a", "log_error"): 2.0, ("app:a", "log_info"): 0.0}
    new, corrected = changes(rows, stored)
    assert new == {("app:a", "log_debug"): 2.0} and corrected == {("app:a", "log_error"): 3.0}
