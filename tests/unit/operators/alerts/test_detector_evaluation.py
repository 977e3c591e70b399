"""The evaluation the detector defaults in config.yaml come from (docs/processing.md, "Detector defaults").

20 sensors x 2 h at one reading a second of normal data (noise and slow drift, synthetic.py) must open no
alert at all; injected anomalies (a step of 10 sd, a ramp at twice the rate limit, a frozen sensor) must
be caught on every sensor within a bound. Each detector runs with the alert book as the evaluator does,
without flap suppression, so every false opening counts.
"""
import functools
import random
from pathlib import Path

import pytest

from pipeline.config import load
from pipeline.operators.alerts.detectors import Outlier, Stuck
from pipeline.operators.alerts.rate import Rate
from pipeline.operators.alerts.lifecycle import AlertBook

from .synthetic import NOISE, ramp, series, step, stuck

ROOT = Path(__file__).resolve().parents[4]
SENSORS, SECONDS, T0 = 20, 7200, 1_760_000_000.0
DETECTORS = {"rate": Rate, "outlier": Outlier, "stuck": Stuck}
METRICS = tuple(NOISE)


@functools.lru_cache(maxsize=1)
def config():
    return load(ROOT / "config.yaml", env={}).config


def rule(metric: str, detector: str):
    return getattr(config().detection.metrics[metric], detector)


@functools.lru_cache(maxsize=None)
def normal(metric: str) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(series(metric, seed=7919 * s + len(metric), seconds=SECONDS)) for s in range(SENSORS))


def openings(detector: str, metric: str, values, start: int = 0) -> list[int]:
    """Indexes of the readings that opened an alert, the detector and book fed as the evaluator feeds them."""
    det, r = DETECTORS[detector](), rule(metric, detector)
    book = AlertBook(config().alerts.clear_readings, config().alerts.clear_seconds)
    key, out = ("s", metric), []
    for i, v in enumerate(values, start):
        signal = det.evaluate(key, v, T0 + i, r)
        if signal is not None:
            t = book.observe("s", metric, detector, signal, T0 + i, v)
            if t is not None and t.event == "opened":
                out.append(i)
    return out


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("detector", DETECTORS)
def test_no_false_alarms_on_normal_data(detector, metric):
    false = {s: o for s, values in enumerate(normal(metric)) if (o := openings(detector, metric, values))}
    assert false == {}


def delays(detector: str, metric: str, inject, seed: int) -> list[int | None]:
    """Seconds from the anomaly's start to the first alert, per sensor (None: missed). Each sensor runs 30
    minutes of normal data before its anomaly, at a random time, and 10 minutes after."""
    rng = random.Random(seed)
    out = []
    for values in normal(metric):
        at = rng.randrange(1800, SECONDS - 600)
        part = inject(list(values[at - 1800:at + 600]), 1800)
        hits = [i for i in openings(detector, metric, part) if i >= 1800]
        out.append(hits[0] - 1800 if hits else None)
    return out


@pytest.mark.parametrize("metric", METRICS)
def test_a_step_of_ten_deviations_is_an_outlier_at_once(metric):
    sd = NOISE[metric][1]
    got = delays("outlier", metric, lambda v, at: step(v, at, 10 * sd), seed=1)
    assert got == [0] * SENSORS


@pytest.mark.parametrize("metric", METRICS)
def test_a_ramp_at_twice_the_rate_limit_is_caught_within_the_window(metric):
    limit = rule(metric, "rate").warning
    got = delays("rate", metric, lambda v, at: ramp(v, at, 2 * limit, 300), seed=2)
    assert None not in got and max(got) <= 45


def quantised(values, resolution: float | None):
    """Readings as a sensor of this resolution reports them (None: unrounded floats)."""
    return values if resolution is None else tuple(round(round(v / resolution) * resolution, 6) for v in values)


# 0.01: the simulator's rounding and a BME280's temperature step; 0.1: a DHT22, or a BME280 read coarsely.
RESOLUTIONS = (None, 0.01, 0.1)


@pytest.mark.parametrize("resolution", RESOLUTIONS)
@pytest.mark.parametrize("metric", METRICS)
def test_the_learned_stuck_limit_stays_quiet_on_normal_data_at_every_resolution(metric, resolution):
    false = {s: o for s, values in enumerate(normal(metric)) if (o := openings("stuck", metric, quantised(values, resolution)))}
    assert false == {}


@pytest.mark.parametrize("metric", METRICS)
def test_a_frozen_sensor_that_never_repeats_is_stuck_at_min_count(metric):
    r = rule(metric, "stuck")
    got = delays("stuck", metric, lambda v, at: stuck(v, at, r.count + 10), seed=3)
    assert got == [r.min_count - 1] * SENSORS  # two repeats: two reporting intervals


@pytest.mark.parametrize("resolution", (0.01, 0.1))
@pytest.mark.parametrize("metric", METRICS)
def test_a_frozen_quantised_sensor_is_stuck_within_the_count(metric, resolution):
    r = rule(metric, "stuck")
    got = delays("stuck", metric, lambda v, at: stuck(list(quantised(v, resolution)), at, r.count + 10), seed=3)
    assert None not in got and max(got) < r.count - 1
