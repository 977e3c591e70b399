"""Labelled anomalies: when the planner injects them, what each kind does to readings, and the ground truth."""
from __future__ import annotations

import json
import random

import pytest

from pipeline.tools.anomalies import KINDS, Anomaly, AnomalyPlanner, Plan, apply, read_truth
from pipeline.tools.simulate import append_truth, parse_args
from pipeline.tools.simulated_fleet import PROFILES, MessageFactory, make_sensors

T0 = 1_767_225_600.0
METRICS = tuple(PROFILES)


def planned(plan: Plan, seconds: int, seed: int = 1) -> tuple[AnomalyPlanner, list[Anomaly | None]]:
    planner = AnomalyPlanner(plan, "s1", METRICS, random.Random(seed))
    return planner, [planner.at(T0 + k) for k in range(seconds)]


def test_no_anomaly_without_a_rate_or_during_warm_up():
    _, none = planned(Plan(per_hour=0.0), 3600)
    assert none == [None] * 3600
    planner, seen = planned(Plan(per_hour=3600.0, warmup_s=300, settle_s=60), 3600)
    assert seen[:300] == [None] * 300 and any(seen[300:])


def test_one_anomaly_at_a_time_with_quiet_between():
    planner, seen = planned(Plan(per_hour=60.0, warmup_s=60, settle_s=600), 6 * 3600)
    started = planner.take_started()
    assert len(started) >= 3 and planner.take_started() == []
    for before, after in zip(started, started[1:]):
        assert after.start >= before.end + 600
    for k, a in enumerate(seen):  # every reading inside an anomaly's [start, end] sees that anomaly
        inside = [x for x in started if x.start <= T0 + k <= x.end]
        assert (a is None) == (not inside) and (a is None or a is inside[0])


def test_kinds_metrics_and_durations_follow_the_plan():
    plan = Plan(per_hour=120.0, kinds=("step", "dropout"), warmup_s=0, settle_s=0,
                durations=(("dropout", 60.0, 90.0),))
    planner, _ = planned(plan, 24 * 3600)
    started = planner.take_started()
    assert {a.kind for a in started} == {"step", "dropout"}
    for a in started:
        if a.kind == "dropout":
            assert a.metric is None and 60 <= a.end - a.start <= 90
        else:
            assert a.metric in METRICS and 300 <= a.end - a.start <= 1200
    with pytest.raises(ValueError):
        AnomalyPlanner(Plan(per_hour=1.0, kinds=("bogus",)), "s1", METRICS, random.Random(1))


def anomaly(kind: str, metric: str | None = "temperature", sign: float = 1.0, size: float = 20.0) -> Anomaly:
    return Anomaly("s1", metric, kind, T0, T0 + 100, sign, size)


def test_each_kind_changes_the_reading_as_documented():
    p = PROFILES["temperature"]
    assert apply(anomaly("step"), "temperature", T0 + 5, 21.0, p, {}) == pytest.approx(21.0 + 20 * p.noise_sd)
    assert apply(anomaly("step"), "humidity", T0 + 5, 45.0, PROFILES["humidity"], {}) == 45.0  # another metric
    assert apply(anomaly("spike", sign=-1.0, size=1.2), "temperature", T0, 21.0, p, {}) == pytest.approx(21.0 - 36.0)
    drift = [apply(anomaly("drift"), "temperature", T0 + dt, 21.0, p, {}) for dt in (0, 50, 100)]
    assert drift == pytest.approx([21.0, 21.0 + 20 * p.noise_sd, 21.0])  # a triangle: away and back
    frozen: dict = {}
    stuck = [apply(anomaly("stuck"), "temperature", T0 + dt, 21.0 + dt, p, frozen) for dt in range(5)]
    assert stuck == [21.0] * 5
    assert apply(anomaly("out_of_range", size=15.0), "temperature", T0, 21.0, p, {}) == p.high + 15.0
    assert apply(anomaly("out_of_range", sign=-1.0, size=15.0), "temperature", T0, 21.0, p, {}) == p.low - 15.0


def test_the_factory_injects_what_the_truth_says():
    plan = Plan(per_hour=30.0, kinds=("step", "dropout", "stuck"), warmup_s=120, settle_s=300,
                durations=(("dropout", 60.0, 120.0),))
    sensors = make_sensors(3)
    factory, clean = (MessageFactory(sensors, METRICS, seed=5, plan=p) for p in (plan, Plan()))
    seen: dict[tuple[str, float], dict | None] = {}
    for k in range(3 * 2 * 3600):
        t = T0 + k / 3
        msg, normal = factory.next_message(t), clean.next_message(t)
        sensor = sensors[k % 3].sensor_id
        seen[sensor, t] = None if msg is None else (json.loads(msg[1])["readings"], json.loads(normal[1])["readings"])
    truth = factory.take_truth()
    assert {a.kind for a in truth} == {"step", "dropout", "stuck"}
    for (sensor, t), got in seen.items():
        inside = [a for a in truth if a.sensor == sensor and a.start <= t <= a.end]
        if not inside:
            assert got is not None and got[0] == got[1]  # normal data is the same with or without the plan
            continue
        a = inside[0]
        if a.kind == "dropout":
            assert got is None
        elif a.kind == "step":
            assert abs(got[0][a.metric] - got[1][a.metric]) > 14 * PROFILES[a.metric].noise_sd


def test_truth_lines_are_written_and_read_back(tmp_path):
    path = tmp_path / "truth.jsonl"
    a, b = anomaly("step"), anomaly("dropout", metric=None)
    append_truth(str(path), [a])
    append_truth(str(path), [b])
    assert read_truth(path.read_bytes().splitlines()) == [
        {"sensor": "s1", "metric": "temperature", "kind": "step", "start": T0, "end": T0 + 100},
        {"sensor": "s1", "metric": None, "kind": "dropout", "start": T0, "end": T0 + 100}]


def test_command_line_anomaly_options():
    o = parse_args(["--anomalies", "0.5", "--truth", "/tmp/t.jsonl", "--anomaly-kinds", "step,stuck"])
    assert o.plan() == Plan(per_hour=0.5, kinds=("step", "stuck")) and o.truth == "/tmp/t.jsonl"
    assert parse_args([]).plan() == Plan(per_hour=0.0, kinds=KINDS)


def test_the_publish_loop_hands_over_the_truth_and_skips_dropped_sensors():
    from pipeline.tools.simulate import publish_loop
    from pipeline.tools.simulated_fleet import Pacer

    now = [0.0]
    plan = Plan(per_hour=3600.0, kinds=("dropout",), warmup_s=1, settle_s=1, durations=(("dropout", 3.0, 3.0),))
    factory = MessageFactory(make_sensors(2), METRICS, plan=plan)
    sent, truth = [], []
    slots = publish_loop(lambda topic, payload: sent.append(topic), factory, Pacer(20.0, 400), 20.0, lambda: False,
                         clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s),
                         wall=lambda: T0 + now[0], on_truth=truth.extend)
    assert slots == 400 and truth and all(a.kind == "dropout" for a in truth)
    assert len(sent) < 400  # the slots of a sensor in a dropout send nothing
