"""Throughput and latency from Prometheus counters and histograms sampled over time.

Pure: the caller reads the metrics (`counter_totals`, `histogram_counts`) once a second and hands the
numbers to `LiveStats`, which turns consecutive samples into per-second rates and latency quantiles
over a sliding window, and keeps a bounded history of those points for the live charts.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Iterable

# A histogram as sampled: upper bounds (the last is +Inf) and cumulative counts, one per bound.
Hist = tuple[tuple[float, ...], tuple[float, ...]]


def counter_totals(metric, by: str | None = None) -> dict[str, float]:
    """A prometheus_client Counter's `_total` samples, summed per value of label `by` (or into "")."""
    out: dict[str, float] = {}
    for family in metric.collect():
        for s in family.samples:
            if s.name.endswith("_total"):
                key = s.labels.get(by, "") if by else ""
                out[key] = out.get(key, 0.0) + s.value
    return out


def histogram_counts(metric, by: str) -> dict[str, Hist]:
    """A labelled Histogram's cumulative bucket counts per value of label `by`."""
    buckets: dict[str, list[tuple[float, float]]] = {}
    for family in metric.collect():
        for s in family.samples:
            if s.name.endswith("_bucket"):
                buckets.setdefault(s.labels.get(by, ""), []).append((float(s.labels["le"]), s.value))
    out: dict[str, Hist] = {}
    for key, pairs in buckets.items():
        pairs.sort()
        out[key] = (tuple(b for b, _ in pairs), tuple(c for _, c in pairs))
    return out


def quantile(bounds: tuple[float, ...], cumulative: Iterable[float], q: float) -> float | None:
    """Like PromQL histogram_quantile: linear interpolation inside the bucket that holds rank q.
    None when the histogram is empty; the highest finite bound when the rank falls in +Inf."""
    counts = list(cumulative)
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in zip(bounds, counts):
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def _delta(new: Hist, old: Hist | None) -> tuple[float, ...]:
    if old is None or old[0] != new[0]:
        return new[1]
    # Counters only grow; a negative difference means the metric was reset, so start from zero.
    return tuple(max(0.0, n - o) for n, o in zip(new[1], old[1]))


class LiveStats:
    """Samples in, points out: rates per counter and latency quantiles per histogram over `window_s`."""

    def __init__(self, window_s: float = 5.0, history_s: int = 300, quantiles: tuple[float, ...] = (0.5, 0.95)):
        self.window_s = window_s
        self.quantiles = quantiles
        self._samples: deque[tuple[float, dict[str, float], dict[str, Hist]]] = deque()
        self.points: deque[dict] = deque(maxlen=history_s)

    def add(self, t: float, counters: dict[str, float], hists: dict[str, Hist]) -> dict:
        """Record one sample taken at time `t`; returns the new point (also appended to `points`)."""
        self._samples.append((t, counters, hists))
        # Keep one sample at or beyond the window's start so the window is always fully covered.
        while len(self._samples) > 2 and self._samples[1][0] <= t - self.window_s:
            self._samples.popleft()
        t0, c0, h0 = self._samples[0]
        dt = t - t0
        rates = {k: (v - c0.get(k, 0.0)) / dt if dt > 0 else 0.0 for k, v in counters.items()}
        latency: dict[str, dict[str, float | None]] = {}
        for key, hist in hists.items():
            delta = _delta(hist, h0.get(key)) if dt > 0 else ()
            latency[key] = {f"p{round(q * 100)}": quantile(hist[0], delta, q) for q in self.quantiles}
            latency[key]["count"] = delta[-1] if delta else 0.0
        point = {"t": t, "rates": {k: max(0.0, v) for k, v in rates.items()}, "latency": latency}
        self.points.append(point)
        return point

    def latest(self) -> dict | None:
        return self.points[-1] if self.points else None

    def history(self, seconds: float) -> list[dict]:
        """The points of the last `seconds`, oldest first."""
        if not self.points or seconds <= 0:
            return []
        since = self.points[-1]["t"] - seconds
        return [p for p in self.points if p["t"] > since]
