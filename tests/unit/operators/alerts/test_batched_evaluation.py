"""The batched evaluator (readings judged per series, the book told afterwards in reading order) opens, escalates,
flags and resolves exactly the alerts the per-reading reference does (reference.py: the evaluator and detector
verdicts as they were), with the same times, values and messages, and in the same order; the timer's tick after
each batch too (clear_seconds, flapping, offline), so the clear streaks started in the same order as well."""
from collections import Counter

from hypothesis import HealthCheck, given, settings, strategies as st

from pipeline.app.build import alert_sections
from pipeline.config import parse
from pipeline.operators.alerts.evaluator import AlertEvaluator
from pipeline.operators.logcounts.counting import APP_SENSOR_TYPE
from pipeline.records import Reading

from .reference import ReferenceEvaluator

T0 = 1_760_000_000.0
SENSORS = ("s0", "s1", "s2")
METRICS = ("temperature", "humidity", "pressure")  # pressure: no rule at all (a series without history)
# 1e200: statistics that overflow (the outlier starts over, the rate has no finite slope)
VALUES = (-15.0, -5.0, 0.0, 0.5, 3.0, 5.0, 9.5, 10.0, 10.5, 15.0, 19.0, 21.0, 30.0, 1e6, 1e200)


@st.composite
def configs(draw):
    for_s = draw(st.sampled_from([0.0, 0.0, 2.0]))
    # Limits present or not and deadbands past a limit: the combined plan's clear bounds (plan.py) in every shape.
    rate_limits = draw(st.sampled_from([{"warning": 1.0, "critical": 5.0}, {"warning": 1.0}, {"critical": 5.0}, {}]))
    z_limits = draw(st.sampled_from([{"z_warning": 2.0, "z_critical": 4.0}, {"z_warning": 2.0}, {"z_critical": 4.0},
                                     {"z_warning": 3.0, "z_critical": 3.0}, {}]))
    temperature = {
        "rate": {**rate_limits, "deadband": draw(st.sampled_from([0.0, 0.2, 6.0])), "window_s": 10.0, "min_samples": 2,
                 "min_span_s": draw(st.sampled_from([0.0, 3.0])), "max_samples": draw(st.sampled_from([3, 50])),
                 "for_s": for_s},
        "outlier": {**z_limits, "min_samples": 3, "min_std": draw(st.sampled_from([0.0, 0.5])),
                    "deadband": draw(st.sampled_from([0.5, 5.0])), "for_s": draw(st.sampled_from([0.0, 2.0]))},
        "stuck": {"count": draw(st.sampled_from([0, 3, 4])), "repeat_chance": draw(st.sampled_from([0.0, 1e-3, 0.2])),
                  "seconds": draw(st.sampled_from([0.0, 6.0])), "min_count": 3, "severity": "critical",
                  "tolerance": draw(st.sampled_from([0.0, 0.0, 0.5])), "for_s": draw(st.sampled_from([0.0, 2.0]))},
    }
    humidity = {"stuck": {"count": 3, "severity": "info", "for_s": for_s}}
    raw = {
        "validation": {"metrics": "any"},
        "thresholds": {"temperature": {"warning": {"min": 0, "max": 10}, "critical": {"min": -10, "max": 20},
                                       "deadband": draw(st.sampled_from([0.0, 1.0])), "for_s": for_s},
                       "humidity": {"warning": {"max": 5}, "deadband": 0.5}},
        "detection": {"offline_after_s": draw(st.sampled_from([0.0, 5.0])),
                      "metrics": {"temperature": temperature, "humidity": humidity},
                      "sensors": {"s1": {"offline_after_s": 3.0,
                                         "metrics": {"temperature": {"threshold": {"warning": {"max": 3}}}}}}},
        "alerts": {"clear_readings": draw(st.integers(0, 3)), "clear_seconds": draw(st.sampled_from([0.0, 0.0, 4.0])),
                   "flap": draw(st.sampled_from([{"count": 0}, {"count": 2, "window_s": 30}, {"count": 3, "window_s": 600}]))},
    }
    return alert_sections(parse(raw, {})).evaluator


# One reading: sensor, metric, value (None: the series' previous value, a frozen sensor), how far time moves
# (negative: out of order), type, location, sent twice.
reading_spec = st.tuples(st.sampled_from(SENSORS), st.sampled_from(METRICS),
                         st.one_of(st.sampled_from(VALUES), st.floats(-30, 30, allow_nan=False), st.none()),
                         st.sampled_from([0.0, 0.5, 1.0, 1.0, 2.0, 7.0, -1.0, -3.0]),
                         st.sampled_from(["sensor", "sensor", APP_SENSOR_TYPE]), st.sampled_from([None, "hall"]),
                         st.booleans())
batches = st.lists(st.tuples(st.lists(reading_spec, max_size=25), st.sampled_from([0.0, 1.0, 10.0])),
                   min_size=1, max_size=12)


def seen(transitions) -> list[tuple]:
    return [(t.event, t.alert.sensor_id, t.alert.metric, t.alert.type, t.severity, t.at, t.value, t.detail,
             t.previous, t.message, t.context, t.alert.opened_at, t.alert.flapping) for t in transitions]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs(), batches)
def test_the_batched_evaluator_decides_what_the_per_reading_reference_does(sections, stream):
    decides_as_the_reference(sections, stream)


def decides_as_the_reference(sections, stream) -> None:
    batched, reference = AlertEvaluator(sections), ReferenceEvaluator(sections)
    ts = T0
    previous: dict[tuple[str, str], float] = {}
    for specs, lag in stream:
        readings = []
        for sensor, metric, value, step, sensor_type, location, twice in specs:
            if step >= 0:
                ts += step
            if value is None:
                value = previous.get((sensor, metric), 5.0)
            previous[sensor, metric] = value
            r = Reading(sensor, sensor_type, location, metric, value, ts + min(step, 0.0), ts)
            readings.extend((r, r) if twice else (r,))
        now = ts + lag
        assert seen(batched.evaluate(readings, now)) == seen(reference.evaluate(readings, now))
        assert seen(batched.tick(now)) == seen(reference.tick(now))
    assert {k: a.severity for k, a in batched.book.open.items()} == {k: a.severity for k, a in reference.book.open.items()}
    assert batched.series == reference.series  # the detectors' history, float for float
    assert list(batched.book.clearing) == list(reference.book.clearing)
    assert batched.sensor_info == reference.sensor_info and batched.last_seen == reference.last_seen
    assert batched.book.series_open == Counter((k[0], k[1]) for k in batched.book.open)  # the index the batch reads


def temperature_only(detection: dict):
    raw = {"validation": {"metrics": "any"},
           "detection": {"offline_after_s": 0.0, "metrics": {"temperature": detection}}}
    return alert_sections(parse(raw, {})).evaluator


def one_series(values: list[float]) -> list:
    """The values as one batch of temperature readings of s0, a second apart (specs as `batches` draws them)."""
    return [([("s0", "temperature", v, 1.0, "sensor", None, False) for v in values], 0.0)]


def test_a_run_of_min_count_judged_stuck_by_the_learned_limit_does_not_teach_the_series_to_repeat():
    """The combined plan hands a run as long as min_count to the stuck detector: the learned limit may have judged
    it (repeat_chance 0.2 at the prior rate: 2 repeats are unlikely), so it must not lower the repeat rate."""
    sections = temperature_only({"stuck": {"repeat_chance": 0.2, "min_count": 3}})
    decides_as_the_reference(sections, one_series([1.0, 2.0, 5.0, 5.0, 5.0, 7.0, 8.0, 8.0, 8.0, 9.0]))


def test_an_outlier_hold_survives_statistics_that_start_over():
    """A verdict held under for_s is not broken by the readings that warm the statistics up again after an
    overflow (no verdict): the reading that crosses the limit next opens the alert at once, as the detector does."""
    sections = temperature_only({"outlier": {"z_warning": 2, "z_critical": 4, "min_samples": 3, "min_std": 0.5,
                                             "for_s": 2}})
    values = [10.0, 10.0, 10.0, 20.0, 1e200, 10.0, 10.0, 10.0, 20.0]
    decides_as_the_reference(sections, one_series(values))
    ev = AlertEvaluator(sections)
    readings = [Reading("s0", "sensor", None, "temperature", v, T0 + i, T0 + i) for i, v in enumerate(values)]
    assert [t.event for t in ev.evaluate(readings, T0 + 10)] == ["opened"]


def test_the_stream_reaches_every_transition_kind():
    """The property above is only as good as its examples: a fixed stream opens, escalates, flaps and resolves."""
    raw_cfg = {"validation": {"metrics": "any"},
               "thresholds": {"temperature": {"warning": {"max": 10}, "critical": {"max": 20}}},
               "detection": {"offline_after_s": 0.0},
               "alerts": {"clear_readings": 1, "flap": {"count": 2, "window_s": 600}}}
    sections = alert_sections(parse(raw_cfg, {})).evaluator
    batched, reference = AlertEvaluator(sections), ReferenceEvaluator(sections)
    values = [11.0, 21.0, 5.0, 11.0, 5.0, 12.0]
    readings = [Reading("s0", "sensor", None, "temperature", v, T0 + i, T0 + i) for i, v in enumerate(values)]
    out = batched.evaluate(readings, T0 + 10)
    assert seen(out) == seen(reference.evaluate(readings, T0 + 10))
    assert [t.event for t in out] == ["opened", "escalated", "resolved", "opened", "flapping"]
