"""Alert lifecycle sequences: open, escalate in place, resolve with hysteresis, no flapping; messages."""
from pipeline.operators.alerts.lifecycle import Alert, AlertBook
from pipeline.operators.alerts.messages import message
from pipeline.config import Bounds, ThresholdRule
from pipeline.operators.alerts.detectors import CLEAR, HOLD, Signal, Threshold

T0 = 1_760_000_000.0
RULE = ThresholdRule(warning=Bounds(max=40), critical=Bounds(max=60), deadband=0.5)
WARN = Signal("warning", detail="above the warning maximum 40")
CRIT = Signal("critical", detail="above the critical maximum 60")


def feed(book: AlertBook, values, rule=RULE, start=T0):
    """Run readings through the threshold detector and the book; returns (event, severity) per transition."""
    det = Threshold()
    out = []
    for i, v in enumerate(values):
        t = book.observe("s1", "temperature", "threshold", det.evaluate(("s1", "temperature"), v, start + i, rule), start + i, v)
        if t is not None:
            out.append((t.event, t.severity, v))
    return out


def test_open_escalate_and_resolve_after_n_clear_readings():
    book = AlertBook(clear_readings=3, clear_seconds=0)
    got = feed(book, [25, 41, 45, 61, 50, 39, 38, 37])
    assert got == [("opened", "warning", 41), ("escalated", "critical", 61), ("resolved", "critical", 37)]
    assert book.open == {}


def test_escalation_is_in_place_and_never_opens_a_second_alert():
    book = AlertBook(3, 0)
    first = book.observe("s1", "temperature", "threshold", WARN, T0, 41)
    again = book.observe("s1", "temperature", "threshold", WARN, T0 + 1, 42)
    worse = book.observe("s1", "temperature", "threshold", CRIT, T0 + 2, 61)
    same = book.observe("s1", "temperature", "threshold", WARN, T0 + 3, 45)  # better but still alerting: no change
    assert again is None and same is None
    assert worse.event == "escalated" and worse.alert is first.alert and worse.previous == "warning"
    assert len(book.open) == 1 and first.alert.severity == "critical"


def test_value_oscillating_around_the_bound_does_not_flap():
    book = AlertBook(clear_readings=3, clear_seconds=0)
    oscillating = [40.2, 39.8, 40.3, 39.9, 40.1, 39.7, 40.4, 39.6] * 5  # never 0.5 inside the bound
    assert feed(book, oscillating) == [("opened", "warning", 40.2)]
    assert len(book.open) == 1


def test_clear_streak_restarts_on_a_reading_in_the_deadband_or_over_the_bound():
    book = AlertBook(clear_readings=3, clear_seconds=0)
    got = feed(book, [41, 39, 38, 39.8, 39, 38, 41, 39, 38, 37])
    assert got == [("opened", "warning", 41), ("resolved", "warning", 37)]


def test_resolution_by_time_from_readings_and_from_the_timer():
    book = AlertBook(clear_readings=0, clear_seconds=10)
    assert feed(book, [41, 39, 39, 39], start=T0) == [("opened", "warning", 41)]  # clear for 2 s only
    [t] = book.due(T0 + 12)  # the sensor went quiet while clear: the timer resolves it
    assert (t.event, t.at) == ("resolved", T0 + 12)
    book2 = AlertBook(clear_readings=0, clear_seconds=10)
    got = feed(book2, [41] + [39] * 12)
    assert got[-1] == ("resolved", "warning", 39) and len(got) == 2
    assert book2.due(T0 + 1000) == []


def test_either_readings_or_seconds_resolve_and_both_zero_resolves_at_once():
    book = AlertBook(clear_readings=5, clear_seconds=2)
    assert feed(book, [41, 39, 39, 39, 39])[-1][0] == "resolved"  # 2 s clear before 5 readings
    assert feed(AlertBook(0, 0), [41, 39]) == [("opened", "warning", 41), ("resolved", "warning", 39)]


def test_hold_does_not_resolve_and_no_alert_means_nothing_happens():
    book = AlertBook(1, 0)
    assert book.observe("s1", "m", "rate", CLEAR, T0) is None
    assert book.observe("s1", "m", "rate", HOLD, T0) is None
    book.observe("s1", "m", "rate", WARN, T0)
    assert book.observe("s1", "m", "rate", HOLD, T0 + 1) is None and len(book.open) == 1


def test_alerts_are_keyed_by_sensor_metric_and_type():
    book = AlertBook(3, 0)
    for key in (("s1", "temperature", "threshold"), ("s1", "temperature", "rate"), ("s1", "humidity", "threshold"),
                ("s2", "temperature", "threshold"), ("s1", None, "offline")):
        assert book.observe(*key, WARN, T0).event == "opened"
    assert len(book.open) == 5


def test_loaded_open_alerts_continue_instead_of_reopening():
    book = AlertBook(3, 0)
    book.load([Alert("s1", "temperature", "threshold", "warning", T0 - 60, "old", id=7)])
    assert book.observe("s1", "temperature", "threshold", WARN, T0) is None
    t = book.observe("s1", "temperature", "threshold", CRIT, T0 + 1)
    assert t.event == "escalated" and t.alert.id == 7


def test_forget_drops_alerts_resolved_elsewhere_but_not_unsaved_ones():
    book = AlertBook(3, 0)
    book.load([Alert("s1", "temperature", "threshold", "warning", T0, id=1), Alert("s2", "temperature", "threshold", "warning", T0, id=2)])
    book.observe("s3", "temperature", "threshold", WARN, T0)  # not stored yet: no id
    gone = book.forget({2})
    assert [a.id for a in gone] == [1] and set(k[0] for k in book.open) == {"s2", "s3"}


def test_offline_resolves_at_once():
    book = AlertBook(3, 0)
    book.observe("s1", None, "offline", Signal("warning", detail="sent no reading for 301 s (limit 300 s)"), T0)
    t = book.resolve(("s1", None, "offline"), T0 + 5)
    assert t.event == "resolved" and book.open == {} and book.resolve(("s1", None, "offline"), T0 + 6) is None


def test_messages_name_sensor_metric_value_bound_and_time():
    book = AlertBook(1, 0)
    opened = book.observe("hall-a", "temperature", "threshold", WARN, T0, 41.5)
    assert message(opened) == ("Warning: temperature of sensor hall-a is 41.5, above the warning maximum 40, "
                               "at 2025-10-09 08:53:20 UTC.")
    escalated = book.observe("hall-a", "temperature", "threshold", CRIT, T0 + 60, 61)
    assert message(escalated) == ("Escalated from warning to critical: temperature of sensor hall-a is 61, above the "
                                  "critical maximum 60, at 2025-10-09 08:54:20 UTC.")
    resolved = book.observe("hall-a", "temperature", "threshold", CLEAR, T0 + 120, 30)
    assert message(resolved) == ("Resolved: temperature of sensor hall-a is back to normal (30) at 2025-10-09 08:55:20 UTC; "
                                 "threshold alert was critical since 2025-10-09 08:53:20 UTC.")
    off = book.observe("hall-b", None, "offline", Signal("warning", detail="sent no reading for 301 s (limit 300 s)"), T0)
    assert message(off) == "Warning: sensor hall-b sent no reading for 301 s (limit 300 s), at 2025-10-09 08:53:20 UTC."
    rate = book.observe("hall-a", "pressure", "rate", Signal("critical", detail="changed by +12 in 2 s (6/s), above the critical limit 3/s"), T0, 1020)
    assert message(rate) == ("Critical: pressure of sensor hall-a changed by +12 in 2 s (6/s), above the critical limit 3/s, "
                             "now 1020, at 2025-10-09 08:53:20 UTC.")


def _cycle(book, t, key=("s1", "m", "rate")):
    """One open/resolve cycle at t (alerting reading, then clear readings); returns the events."""
    events = [book.observe(*key, WARN, t, 1.0)]
    events += [book.observe(*key, CLEAR, t + 1 + i, 0.0) for i in range(3)]
    return [e.event for e in events if e is not None]


def test_flapping_alert_is_held_open_not_announced_and_resolves_once_quiet():
    book = AlertBook(clear_readings=3, clear_seconds=0, flap_count=3, flap_window_s=600)
    assert _cycle(book, T0) == ["opened", "resolved"]
    assert _cycle(book, T0 + 60) == ["opened", "resolved"]
    assert _cycle(book, T0 + 120) == ["opened", "flapping"]  # the third resolution within 600 s: held open
    alert = book.open[("s1", "m", "rate")]
    assert alert.flapping
    for k in range(5):  # the condition keeps coming back: no transition at all
        assert _cycle(book, T0 + 180 + 60 * k) == []
    # clear readings before the window of quiet has passed keep it open; once quiet for 600 s, it resolves
    assert book.observe("s1", "m", "rate", CLEAR, T0 + 420 + 599, 0.0) is None
    t = book.observe("s1", "m", "rate", CLEAR, T0 + 420 + 600, 0.0)
    assert t.event == "resolved" and book.open == {}
    assert _cycle(book, T0 + 2000) == ["opened", "resolved"]  # counted afresh


def test_flapping_message_and_timer_resolution():
    book = AlertBook(clear_readings=3, clear_seconds=0, flap_count=2, flap_window_s=300)
    _cycle(book, T0)
    book.observe("hall-a", "humidity", "rate", WARN, T0, 1.0)
    t = [book.observe("s1", "m", "rate", WARN, T0 + 50, 1.0)] + [
        book.observe("s1", "m", "rate", CLEAR, T0 + 51 + i, 0.0) for i in range(3)]
    flap = t[-1]
    assert flap.event == "flapping"
    assert message(flap).startswith("Flapping: m of sensor s1 opened and resolved 2 times within 300 s (rate, warning); "
                                    "held open and not announced again until quiet")
    assert book.due(T0 + 50 + 299) == []
    assert [x.event for x in book.due(T0 + 50 + 300)] == ["resolved"]


def test_cycles_spread_wider_than_the_window_do_not_flap_and_off_means_off():
    book = AlertBook(clear_readings=3, clear_seconds=0, flap_count=3, flap_window_s=100)
    for k in range(6):
        assert _cycle(book, T0 + 60 * k) == ["opened", "resolved"]
    off = AlertBook(clear_readings=3, clear_seconds=0)
    for k in range(6):
        assert _cycle(off, T0 + 10 * k) == ["opened", "resolved"]
