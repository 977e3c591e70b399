"""Each detector on its own, fed scripted sequences; and how per-sensor overrides merge."""
import itertools
import random

import pytest

from pipeline.config import Bounds, OutlierRule, RateRule, StuckRule, ThresholdRule, parse
from pipeline.operators.alerts.detectors import (
    CLEAR, HOLD, REPEAT_LEARNING, Outlier, Stuck, Threshold, offline, repeat_rate_after, repeats_unlikely_after,
)
from pipeline.operators.alerts.rate import Rate, points, window_slope
from pipeline.operators.alerts.rules import Rules

K = ("s1", "temperature")
TEMP = ThresholdRule(warning=Bounds(min=-10, max=40), critical=Bounds(min=-25, max=60), deadband=0.5)


def severities(detector, rule, values, start=0.0, step=1.0):
    out = []
    for i, v in enumerate(values):
        s = detector.evaluate(K, v, start + i * step, rule)
        out.append(None if s is None else s.severity or ("clear" if s.clear else "hold"))
    return out


@pytest.mark.parametrize("value, expected", [
    (20, "clear"), (39.5, "clear"), (39.6, "hold"), (40, "hold"), (40.1, "warning"), (60.1, "critical"),
    (-9.5, "clear"), (-9.6, "hold"), (-10.1, "warning"), (-25.1, "critical"),
])
def test_threshold_levels_and_deadband(value, expected):
    assert severities(Threshold(), TEMP, [value]) == [expected]


def test_threshold_detail_names_the_bound():
    s = Threshold().evaluate(K, 61.0, 0, TEMP)
    assert (s.severity, s.bound, s.detail) == ("critical", 60, "above the critical maximum 60")
    s = Threshold().evaluate(K, -11.0, 0, TEMP)
    assert (s.severity, s.bound, s.detail) == ("warning", -10, "below the warning minimum -10")


def test_threshold_with_only_a_critical_bound_clears_against_it():
    rule = ThresholdRule(critical=Bounds(max=95), deadband=5)
    assert severities(Threshold(), rule, [96, 92, 89]) == ["critical", "hold", "clear"]


CPU = ThresholdRule(warning=Bounds(max=90), critical=Bounds(max=98), deadband=5, for_s=60)


def test_threshold_held_for_a_duration_ignores_short_spikes():
    # every 10 s: 50 s above 90 %, a dip, then 70 s above: only the second run counts, after 60 s
    values = [95] * 6 + [80] + [95] * 8
    assert severities(Threshold(), CPU, values, step=10) == (
        ["hold"] * 6 + ["clear"] + ["hold"] * 6 + ["warning", "warning"])


def test_threshold_held_reports_how_long_and_escalates_after_the_duration():
    t = Threshold()
    assert t.evaluate(K, 99, 0, CPU).severity is None
    s = t.evaluate(K, 99, 61, CPU)
    assert (s.severity, s.bound, s.detail) == ("critical", 98, "above the critical maximum 98 for 61 s")
    assert t.evaluate(K, 92, 70, CPU).severity == "warning"  # still beyond a bound: the run goes on
    assert t.evaluate(K, 87, 80, CPU) is HOLD and t.evaluate(K, 84, 90, CPU) is CLEAR  # deadband
    assert t.evaluate(K, 95, 100, CPU).severity is None  # a new run starts from zero


def test_unconfigured_detectors_answer_clear_so_old_alerts_resolve():
    for d in (Threshold(), Rate(), Outlier(), Stuck()):
        assert d.evaluate(K, 1.0, 0.0, None) is CLEAR


def test_rate_is_the_least_squares_slope_over_the_window():
    rule = RateRule(warning=0.1, critical=0.3, deadband=0.02, window_s=10, min_samples=5, min_span_s=4)
    # 0.2/s for 10 readings: silent until 5 readings span 4 s, then warning; 0.5/s: critical
    got = severities(Rate(), rule, [20 + 0.2 * i for i in range(10)])
    assert got == [None] * 4 + ["warning"] * 6
    r = Rate()
    severities(r, rule, [20.0] * 10)
    s = r.evaluate(K, 20.0, 10, rule)
    assert s is CLEAR
    s = severities(r, rule, [20 + 0.5 * i for i in range(1, 12)], start=11)
    assert s[-1] == "critical"


def test_rate_ignores_noise_between_consecutive_readings():
    # alternating ±1 around a flat level: 2/s between consecutive readings, but no slope over the window
    rule = RateRule(warning=0.1, window_s=30, min_samples=10, min_span_s=10)
    got = severities(Rate(), rule, [50 + (1 if i % 2 else -1) for i in range(60)])
    assert got[:10] == [None] * 10 and set(got[10:]) == {"clear"}


def test_rate_deadband_holds_near_the_limit():
    rule = RateRule(warning=0.1, deadband=0.02, window_s=10, min_samples=3, min_span_s=2)
    r = Rate()
    assert severities(r, rule, [0.09 * i for i in range(10)])[-1] == "hold"
    r2 = Rate()
    assert severities(r2, rule, [0.05 * i for i in range(10)])[-1] == "clear"


def test_rate_detail_and_out_of_order_readings():
    rule = RateRule(warning=1.0, window_s=10, min_samples=3, min_span_s=2)
    r = Rate()
    for i in range(3):
        r.evaluate(K, 10.0 + 2 * i, float(i), rule)
    assert r.evaluate(K, 99.0, 1.5, rule) is None  # older than the newest reading: ignored
    s = r.evaluate(K, 16.0, 3.0, rule)
    assert s.severity == "warning" and "changed at +2/s over the last 3 s (4 readings)" in s.detail


def test_rate_window_keeps_bounded_memory():
    rule = RateRule(warning=1.0, window_s=60, min_samples=3, min_span_s=2, max_samples=50)
    r = Rate()
    for i in range(1000):
        r.evaluate(K, 20.0, i * 0.1, rule)  # 600 readings per window at 10/s: cut to the latest 50
    assert len(points(r.series[K])) == 50
    for i in range(1000, 1300):
        r.evaluate(K, 20.0, i * 1.0, rule)
    assert len(points(r.series[K])) == 50 and window_slope(r.series[K]) == 0.0


def test_rate_slope_stays_exact_far_from_the_epoch():
    rule = RateRule(warning=1.0, window_s=60, min_samples=10, min_span_s=10)
    r = Rate()
    t0 = 1.76e9
    for i in range(2000):  # long enough to re-base several times
        r.evaluate(K, 1013.25 + 0.01 * i, t0 + i, rule)
    assert abs(window_slope(r.series[K]) - 0.01) < 1e-9


def test_every_detector_holds_for_for_s():
    rate = RateRule(warning=0.1, window_s=10, min_samples=3, min_span_s=2, for_s=5)
    got = severities(Rate(), rate, [0.5 * i for i in range(12)])
    assert got[:2] == [None, None] and got[2:7] == ["hold"] * 5 and got[7:] == ["warning"] * 5  # held from t=2 to t=7
    outlier = OutlierRule(z_warning=3, alpha=0.1, min_samples=5, min_std=0.5, for_s=3)
    o = Outlier()
    severities(o, outlier, [10.0] * 5)
    assert severities(o, outlier, [20.0, 10.0], start=5) == ["hold", "clear"]  # one spike: never counted
    stuck = StuckRule(count=3, for_s=10)
    assert severities(Stuck(), stuck, [5] * 15) == ["clear"] * 2 + ["hold"] * 10 + ["warning"] * 3


def test_outlier_needs_min_samples_then_fires_on_z_score():
    rule = OutlierRule(z_warning=3, z_critical=6, alpha=0.1, min_samples=20, deadband=0.5)
    o = Outlier()
    normal = [20 + (0.5 if i % 2 else -0.5) for i in range(20)]
    got = severities(o, rule, normal)
    assert got[:20] == [None] * 20  # warming up: silent
    assert severities(o, rule, [20.2], start=100)[0] == "clear"
    assert severities(o, rule, [22.2], start=101)[0] == "warning"  # ~4 deviations
    o2 = Outlier()
    severities(o2, rule, normal)
    s = o2.evaluate(K, 30.0, 100, rule)
    assert s.severity == "critical" and "standard deviations from its recent mean" in s.detail


def test_outlier_min_std_keeps_a_flat_signal_quiet():
    rule = OutlierRule(z_warning=4, min_samples=5, min_std=0.5)
    o = Outlier()
    assert severities(o, rule, [21.0] * 10 + [21.3]) == [None] * 5 + ["clear"] * 6
    assert severities(o, rule, [23.5], start=20) == ["warning"]


def test_outlier_state_absorbs_a_lasting_level_shift():
    rule = OutlierRule(z_warning=3, alpha=0.3, min_samples=5)
    o = Outlier()
    got = severities(o, rule, [10, 11, 10, 11, 10, 11] + [30] * 30)
    assert got[6] == "warning" and got[-1] == "clear"


def test_stuck_by_count_and_by_duration():
    by_count = StuckRule(count=4, severity="warning")
    assert severities(Stuck(), by_count, [5, 5, 5, 5, 5, 6, 6]) == ["clear", "clear", "clear", "warning", "warning", "clear", "clear"]
    by_time = StuckRule(seconds=30, severity="info")
    assert severities(Stuck(), by_time, [5, 5, 5, 5], step=15) == ["clear", "clear", "info", "info"]


def test_stuck_tolerance_and_off():
    assert severities(Stuck(), StuckRule(count=3, tolerance=0.05), [5.0, 5.04, 4.97]) == ["clear", "clear", "warning"]
    assert severities(Stuck(), StuckRule(), [5, 5, 5, 5]) == ["clear"] * 4


LEARNED = StuckRule(repeat_chance=1e-7, count=60)


def fine_grained(n: int, seed: int = 1) -> list[float]:
    """A series that never repeats a reading (like an unrounded float from a 20-bit ADC)."""
    rng = random.Random(seed)
    return [20 + rng.random() for _ in range(n)]


def coarse(n: int, seed: int = 1) -> list[float]:
    """A coarse sensor in a still room: half its readings repeat the previous one, the others move 0.1."""
    rng = random.Random(seed)
    out = [20.0]
    for _ in range(n - 1):
        out.append(out[-1] if rng.random() < 0.5 else round(out[-1] + rng.choice((-0.1, 0.1)), 1))
    return out


def test_the_learned_stuck_limit_catches_a_series_that_never_repeats_after_min_count_readings():
    history = fine_grained(2000)
    got = severities(Stuck(), LEARNED, history + [21.5] * 5)
    assert set(got[:2000]) == {"clear"}
    assert got[2000:] == ["clear", "clear", "warning", "warning", "warning"]  # min_count 3: the 2nd repeat


def test_a_new_series_needs_longer_runs_until_its_repeat_rate_is_learned():
    # The prior (20 % repeats) asks for ceil(log(1e-7) / log(0.2 * sqrt 2)) = 13 repeats: 14 readings.
    got = severities(Stuck(), LEARNED, [21.5] * 20)
    assert got.index("warning") == repeats_unlikely_after(0.2, 1e-7) == 13


def test_a_coarse_series_that_repeats_half_the_time_is_not_stuck_for_its_normal_runs():
    values = coarse(20_000)
    got = severities(Stuck(), LEARNED, values)
    longest = max(len(list(g)) for _, g in itertools.groupby(values))
    assert longest >= 10 and "warning" not in got  # runs of 10+ readings are normal for this sensor
    assert severities(Stuck(), StuckRule(count=10), values).count("warning") > 0  # a fixed count cries wolf


def test_a_stuck_run_does_not_teach_the_series_to_repeat():
    history = fine_grained(2000)
    detector = Stuck()
    first = severities(detector, LEARNED, history + [21.5] * 300 + fine_grained(50, seed=2) + [21.7] * 5)
    assert first[2300:2350].count("warning") == 0 and first[-5:] == ["clear", "clear", "warning", "warning", "warning"]


def test_readings_delivered_again_or_out_of_order_are_not_repeats():
    history = fine_grained(2000)
    detector = Stuck()
    assert set(severities(detector, LEARNED, history)) == {"clear"}
    resent = [detector.evaluate(K, 21.5, t, LEARNED) for t in (3000.0, 3000.0, 3000.0, 2999.0, 2500.0)]
    assert resent[0] is CLEAR and resent[1:] == [None] * 4  # one reading, three times and late copies: no run
    assert detector.evaluate(K, 21.5, 3001.0, LEARNED) is CLEAR  # the run's second reading
    assert detector.evaluate(K, 21.5, 3002.0, LEARNED).severity == "warning"  # its third


def test_the_repeat_rate_is_an_ewma_of_repeats_in_closed_form():
    rate, step = 0.2, 0.2
    for repeats in (0, 1, 7, 40):
        for _ in range(repeats):
            step += REPEAT_LEARNING * (1 - step)
        step += REPEAT_LEARNING * (0 - step)
        rate = repeat_rate_after(rate, repeats)
        assert rate == pytest.approx(step, rel=1e-12)


@pytest.mark.parametrize("rate, chance, repeats", [(0.029, 1e-7, 6), (0.005, 1e-7, 4), (1e-9, 1e-7, 2),
                                                   (0.5, 1e-7, 47), (0.9999, 1e-7, 16111)])
def test_repeats_unlikely_after_is_the_smallest_run_below_the_chance(rate, chance, repeats):
    assert repeats_unlikely_after(rate, chance) == repeats
    worst = min(max(rate * 2 ** 0.5, 1e-6), 0.999)
    assert worst ** repeats <= chance < worst ** (repeats - 1) or repeats == 1


def test_offline_verdict():
    assert offline(301, 300, "warning").severity == "warning"
    assert "sent no reading for 301 s (limit 300 s)" in offline(301, 300, "warning").detail
    assert offline(299, 300, "warning") is CLEAR


def test_rules_merge_metric_settings_and_per_sensor_overrides():
    cfg = parse({
        "thresholds": {"temperature": {"warning": {"max": 40}}},
        "detection": {"offline_after_s": 300,
                      "metrics": {"temperature": {"rate": {"warning": 1.0}, "stuck": {"count": 10}}},
                      "sensors": {"oven-1": {"offline_after_s": 30, "metrics": {"temperature": {
                          "threshold": {"warning": {"max": 250}}, "stuck": {"count": 0}}}}}},
    }, {})
    rules = Rules(cfg.thresholds, cfg.detection)
    plain = rules.for_metric("hall-a", "temperature")
    oven = rules.for_metric("oven-1", "temperature")
    assert plain.threshold.warning.max == 40 and oven.threshold.warning.max == 250
    assert plain.rate == oven.rate == RateRule(warning=1.0)  # inherited
    assert plain.stuck.count == 10 and oven.stuck.count == 0  # replaced (turned off for the oven)
    assert rules.for_metric("hall-a", "lux") == type(plain)()
    assert (rules.offline_after("hall-a"), rules.offline_after("oven-1")) == (300, 30)
    off = parse({"thresholds": {"temperature": {"warning": {"max": 40}}}, "detection": {"enabled": False}}, {})
    r2 = Rules(off.thresholds, off.detection)
    assert r2.for_metric("x", "temperature").threshold is not None and r2.offline_after("x") == 0


def test_hold_and_clear_are_distinct():
    assert HOLD != CLEAR and not HOLD.clear and CLEAR.clear
