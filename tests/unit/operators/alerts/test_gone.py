"""A sensor that says it is gone (SensorOffline, a Sparkplug death) is offline at once, not after
offline_after_s; a reading after the mark, in the same batch or a later one, brings it back."""
from pipeline.config import DetectionConfig
from pipeline.config.alerting import FlapConfig
from pipeline.operators.alerts.evaluator import AlertEvaluator
from pipeline.operators.alerts.sections import EvaluatorSettings
from pipeline.records import RawMessage, Reading, SensorOffline

T0 = 1_760_000_000.0


def evaluator(offline_after_s: float = 3600) -> AlertEvaluator:
    return AlertEvaluator(EvaluatorSettings({}, DetectionConfig(offline_after_s=offline_after_s), clear_readings=1,
                                            clear_seconds=0.0, flap=FlapConfig(count=0), state_idle_s=86400.0))


def at(offset: int) -> RawMessage:
    return RawMessage("spBv1.0/G/DDATA/E/D", b"", T0, partition=0, offset=offset)


def reading(offset: int, ts: float) -> Reading:
    return Reading("G_E_D", "plc", None, "temperature", 20.0, ts, ts, source=at(offset))


def test_a_death_opens_an_offline_alert_at_once_and_the_next_reading_resolves_it():
    ev = evaluator()
    ev.evaluate([reading(1, T0)], T0)
    opened = ev.gone([SensorOffline("G_E_D", T0 + 1, "DDEATH", at(2))], [], T0 + 1)
    assert [(t.event, t.alert.type, t.alert.sensor_id) for t in opened] == [("opened", "offline", "G_E_D")]
    assert "said it is offline (DDEATH)" in opened[0].message
    assert ev.tick(T0 + 7200) == []  # not opened again by the silence timer
    back = ev.evaluate([reading(3, T0 + 2)], T0 + 2)
    assert [(t.event, t.alert.type) for t in back] == [("resolved", "offline")]


def test_a_reading_after_the_death_in_the_same_batch_means_the_sensor_is_back():
    ev = evaluator()
    readings = [reading(3, T0 + 2)]
    ev.evaluate(readings, T0 + 2)
    assert ev.gone([SensorOffline("G_E_D", T0 + 1, "DDEATH", at(2))], readings, T0 + 2) == []
    # ... and a reading before it does not.
    assert len(ev.gone([SensorOffline("G_E_D", T0 + 1, "DDEATH", at(4))], readings, T0 + 2)) == 1


def test_no_offline_alert_where_offline_alerts_are_off():
    ev = evaluator(offline_after_s=0)
    assert ev.gone([SensorOffline("G_E_D", T0 + 1, "DDEATH", at(2))], [], T0 + 1) == []
