"""The evaluation's matching rule and metrics: alerts and ground truth in, precision, recall, delay out."""
from __future__ import annotations

import pytest

from pipeline.evaluate.report import render
from pipeline.evaluate.scoring import (ANY, Alert, Truth, censor, match, matches, normal_hours, percentile, score,
                                       targets)

STEP = Truth("s1", "temperature", "step", 1000.0, 1600.0)
DROPOUT = Truth("s2", None, "dropout", 1000.0, 1090.0)


def test_an_alert_matches_same_sensor_and_metric_from_start_to_end_plus_tolerance():
    assert matches(Alert("s1", "temperature", "outlier", 1000.0), STEP, 60)
    assert matches(Alert("s1", "temperature", "rate", 1660.0), STEP, 60)
    assert not matches(Alert("s1", "temperature", "rate", 1660.5), STEP, 60)   # after end + tolerance
    assert not matches(Alert("s1", "temperature", "rate", 999.0), STEP, 60)    # before the start
    assert not matches(Alert("s1", "humidity", "outlier", 1100.0), STEP, 60)   # another metric
    assert not matches(Alert("s9", "temperature", "outlier", 1100.0), STEP, 60)  # another sensor
    # Without a metric on either side (offline, a dropout) the sensor is enough.
    assert matches(Alert("s2", None, "offline", 1035.0), DROPOUT, 60)
    assert matches(Alert("s2", "pressure", "rate", 1100.0), DROPOUT, 60)
    assert matches(Alert("s1", None, "offline", 1100.0), STEP, 60)


def test_match_picks_the_anomaly_that_started_last_and_leaves_false_alerts_unmatched():
    early, late = Truth("s1", "humidity", "spike", 900.0, 900.0), Truth("s1", "humidity", "step", 940.0, 2000.0)
    alerts = [Alert("s1", "humidity", "outlier", 950.0), Alert("s1", "humidity", "outlier", 5000.0)]
    assert match(alerts, [early, late], 60) == [1, None]


def test_score_recall_delay_precision_and_false_alerts_per_100_sensor_hours():
    truths = [Truth(f"s{i}", "temperature", "step", 1000.0 * i, 1000.0 * i + 600) for i in range(1, 5)]
    alerts = [Alert("s1", "temperature", "outlier", 1000.0), Alert("s1", "temperature", "rate", 1015.0),
              Alert("s2", "temperature", "outlier", 2002.0), Alert("s3", "temperature", "outlier", 3004.0),
              # s4's step is missed; two false alerts, one of them outside every window
              Alert("s4", "humidity", "outlier", 4100.0), Alert("s5", "pressure", "rate", 50.0)]
    r = score(alerts, truths, sensor_hours=100.0, tolerance_s=60.0)
    step = r["kinds"]["step"]
    assert step["count"] == 4
    assert step["by"][ANY] == {"caught": 3, "recall": 0.75, "delay_median_s": 2.0, "delay_p95_s": 4.0}
    assert step["by"]["rate"] == {"caught": 1, "recall": 0.25, "delay_median_s": 15.0, "delay_p95_s": 15.0}
    assert r["detectors"]["outlier"] == {"alerts": 4, "matched": 3, "precision": 0.75, "false": 1,
                                         "false_per_100h": pytest.approx(100 / r["normal_sensor_hours"], abs=1e-3)}
    assert r["detectors"]["rate"]["false"] == 1 and r["false_alerts"] == 2 and r["precision"] == pytest.approx(4 / 6)
    assert r["normal_sensor_hours"] == pytest.approx(100.0 - 4 * 660 / 3600, abs=1e-3)
    assert r["false_per_100h"] == pytest.approx(200 / r["normal_sensor_hours"], abs=1e-3)


def test_normal_data_only_every_alert_is_false():
    r = score([Alert("s1", "temperature", "outlier", 10.0)], [], sensor_hours=50.0, tolerance_s=60.0)
    assert r["false_alerts"] == 1 and r["false_per_100h"] == 2.0 and r["kinds"] == {}
    assert normal_hours(1.0, [Truth("s", None, "dropout", 0.0, 7200.0)], 0) == 0.0


def test_percentile_is_nearest_rank():
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    assert percentile([float(v) for v in range(1, 101)], 95) == 95.0
    assert percentile([1.0, 2.0, 3.0, 10.0], 50) == 2.0


def test_censor_leaves_out_anomalies_cut_by_the_end_and_their_alerts():
    cut = Truth("s3", None, "dropout", 1950.0, 2100.0)
    alerts = [Alert("s2", None, "offline", 1035.0), Alert("s3", None, "offline", 1985.0),
              Alert("s1", None, "offline", 2030.0)]
    kept_alerts, kept_truths = censor(alerts, [DROPOUT, cut], horizon=2000.0, tolerance_s=60.0)
    assert kept_truths == [DROPOUT] and kept_alerts == [alerts[0]]
    late, _ = censor(alerts, [DROPOUT, cut], horizon=2000.0, tolerance_s=60.0, late_alerts=True)
    assert late == [alerts[0], alerts[2]]


def test_targets_and_the_table():
    truths = [Truth("s1", "temperature", "step", 0.0, 600.0), DROPOUT]
    alerts = [Alert("s1", "temperature", "outlier", 1.0), Alert("s2", None, "offline", 1036.0)]
    r = score(alerts, truths, sensor_hours=200.0, tolerance_s=60.0)
    checks = {c.name: c for c in targets(r, interval_s=1.0, offline_after_s=30.0, tick_s=5.0)}
    assert checks["false alerts per 100 sensor-hours"].met
    assert checks["recall step"].met and checks["median delay step"].met
    assert not checks["median delay dropout"].met  # 36 s > 30 s + one 5 s tick
    text = render({"command": "python -m pipeline.evaluate", "date": "d", "machine": "m", "interval_s": 1.0},
                  r, list(checks.values()))
    assert "| step | 1 | **any** | 1 | 100.0 % | 1 s | 1 s |" in text
    assert "| median delay dropout | <= 35 s | 36 s | **no** |" in text


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def test_replay_holds_the_rate_and_stays_within_the_backlog_of_the_daemon():
    from pipeline.evaluate.harness import replay

    fake, sent, backlog = FakeClock(), [], []
    taken = lambda: int(fake.now * 300)  # noqa: E731 - the daemon takes 300 messages a second
    messages = iter([("t", b"x")] * 2000 + [None] * 50)  # None: a sensor in a dropout, nothing to send

    def publish(topic, payload):
        sent.append(fake.now)
        backlog.append(len(sent) - taken())

    assert replay(publish, messages, rate=1000.0, arrived=taken, max_backlog=500, clock=fake.clock,
                  sleep=fake.sleep) == 2000
    assert max(backlog) <= 500 + 200  # checked every 200 messages
    assert fake.now == pytest.approx((2000 - 500) / 300, rel=0.05)  # paced by the daemon, not the asked rate
    stalled = FakeClock()
    assert replay(lambda *_: None, iter([("t", b"x")] * 1000), rate=1e9, arrived=lambda: 0, max_backlog=100,
                  clock=stalled.clock, sleep=stalled.sleep) == 1000  # nothing arrives: gives up waiting, goes on
