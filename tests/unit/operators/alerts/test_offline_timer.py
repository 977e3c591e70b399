"""The offline timer: deadlines in a heap, a tick costs the deadlines that passed; a sensor whose offline alert
opened leaves the timer (its alert stays open) and a reading brings it back."""
from pipeline.app.build import alert_sections
from pipeline.config import parse
from pipeline.operators.alerts.evaluator import AlertEvaluator
from pipeline.operators.alerts.offline import OfflineTimer
from pipeline.records import Reading

T0 = 1_760_000_000.0


def reading(sensor: str, ts: float) -> Reading:
    return Reading(sensor, "sensor", None, "temperature", 20.0, ts, ts)


def test_a_sensor_is_due_only_once_silent_past_its_limit():
    timer = OfflineTimer(lambda s: 10.0)
    timer.seen("a", 0.0)
    timer.seen("b", 0.0)
    timer.seen("a", 8.0)  # a reported again: its deadline moves (no second heap entry)
    assert len(timer._heap) == 2
    assert timer.due(10.0) == []  # exactly at the limit is not past it
    assert timer.due(10.5) == [("b", 10.5)]
    assert "b" not in timer and "a" in timer and timer.due(17.0) == []
    assert timer.due(18.5) == [("a", 10.5)] and len(timer) == 0


def test_sensors_with_limit_zero_are_never_due_and_released_when_idle():
    timer = OfflineTimer(lambda s: 0.0 if s.startswith("app:") else 5.0)
    timer.seen("app:x", 0.0)
    timer.seen("dev", 0.0)
    assert timer.due(100.0) == [("dev", 100.0)] and "app:x" in timer
    assert timer.evict_idle(cutoff=50.0) == 1 and len(timer) == 0


def test_a_tick_costs_the_due_deadlines_not_every_sensor_ever_seen():
    limits = []
    timer = OfflineTimer(lambda s: limits.append(s) or 60.0)
    for i in range(100_000):
        timer.seen(f"once-{i}", 0.0)
    limits.clear()
    assert len(timer.due(61.0)) == 100_000  # each once, then they leave the timer
    limits.clear()
    assert timer.due(62.0) == [] and timer.due(1000.0) == [] and limits == []  # nothing walked any more
    assert len(timer) == 0 and timer._heap == []


def config(offline_after_s: float = 60.0):
    return parse({"detection": {"offline_after_s": offline_after_s}, "limits": {"state_idle_s": 3600}}, {})


def test_one_shot_sensors_go_offline_once_keep_their_alert_and_leave_the_timer():
    ev = AlertEvaluator(alert_sections(config()).evaluator)
    ev.evaluate([reading(f"once-{i}", T0) for i in range(1000)], now=0.0)
    out = ev.tick(61.0)
    assert len(out) == 1000 and {t.event for t in out} == {"opened"}
    assert len(ev.last_seen) == 0 and len(ev.book.open) == 1000  # out of the timer, alerts kept open
    assert ev.tick(120.0) == [] and ev.tick(7200.0) == []
    ev.evict_idle(61.0 + 3600 - 1)
    assert len(ev.book.open) == 1000  # open for less than state_idle_s: kept
    ev.evict_idle(7200.0)  # offline for longer: released here, open in the database until the sensor returns
    assert len(ev.book.open) == 0 and ev.released_open == 1000 and ev.sensors() == set()


def test_a_reading_resolves_the_offline_alert_and_tracks_the_sensor_again():
    ev = AlertEvaluator(alert_sections(config()).evaluator)
    ev.evaluate([reading("s", T0)], now=0.0)
    [opened] = ev.tick(61.0)
    assert opened.alert.type == "offline" and "s" not in ev.last_seen
    [resolved] = ev.evaluate([reading("s", T0 + 500)], now=500.0)
    assert resolved.event == "resolved" and "s" in ev.last_seen
    [again] = ev.tick(561.0)
    assert (again.event, again.alert.type) == ("opened", "offline")


def test_sensors_loaded_with_an_open_offline_alert_are_not_put_in_the_timer():
    from pipeline.operators.alerts.lifecycle import Alert

    ev = AlertEvaluator(alert_sections(config()).evaluator)
    ev.load([Alert("gone", None, "offline", "warning", T0, id=7)], [("gone", "sensor"), ("here", "sensor")], now=0.0)
    assert set(ev.last_seen) == {"here"}


def test_a_reload_reschedules_with_the_new_limit():
    ev = AlertEvaluator(alert_sections(config(600.0)).evaluator)
    ev.evaluate([reading("s", T0)], now=0.0)
    assert ev.tick(61.0) == []
    ev.reconfigure(alert_sections(config(60.0)).evaluator)
    assert [t.alert.type for t in ev.tick(61.0)] == ["offline"]
