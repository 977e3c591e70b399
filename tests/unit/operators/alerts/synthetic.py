"""Synthetic sensor series for the detector evaluation: seeded noise, slow drift, injected anomalies.

Noise levels are those of real indoor sensors (temperature sd 0.1 °C, humidity sd 0.5 %RH, pressure sd
0.2 hPa); the drift is a slow swing (a few units over an hour) plus a small random walk, as a building does.
"""
from __future__ import annotations

import math
import random

# metric -> (base level, noise sd, drift amplitude, random-walk step sd per reading)
NOISE = {"temperature": (21.0, 0.1, 1.5, 0.002), "humidity": (45.0, 0.5, 4.0, 0.01),
         "pressure": (1013.0, 0.2, 2.0, 0.005)}


def series(metric: str, seed: int, seconds: int) -> list[float]:
    """One sensor's readings, one a second, normal data only."""
    base, sd, amp, walk = NOISE[metric]
    rng = random.Random(seed)
    period = rng.uniform(3600, 7200)
    phase = rng.uniform(0, 2 * math.pi)
    gauss = rng.gauss
    level, out = 0.0, []
    for t in range(seconds):
        level += gauss(0.0, walk)
        out.append(base + amp * math.sin(phase + 2 * math.pi * t / period) + level + gauss(0.0, sd))
    return out


def step(values: list[float], at: int, size: float) -> list[float]:
    """A lasting jump of `size` from reading `at` on."""
    return values[:at] + [v + size for v in values[at:]]


def ramp(values: list[float], at: int, per_s: float, seconds: int) -> list[float]:
    """A change of `per_s` per second for `seconds` from reading `at`, then the level stays where it got."""
    return [v + per_s * min(max(i - at, 0), seconds) for i, v in enumerate(values)]


def stuck(values: list[float], at: int, seconds: int) -> list[float]:
    """The reading at `at` repeated for `seconds` (a frozen sensor), then normal again."""
    return [values[at] if at <= i < at + seconds else v for i, v in enumerate(values)]
