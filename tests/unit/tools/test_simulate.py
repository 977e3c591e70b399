"""Device simulator: payloads, value model, determinism and pacing, all without a broker."""
from __future__ import annotations

import json
import math
import random
import re

import pytest

from pipeline.tools.anomalies import Plan
from pipeline.tools.simulate import Summary, auto_processes, parse_args, publish_loop, split_fleet, total_for
from pipeline.tools.simulated_fleet import (PROFILES, MessageFactory, Pacer, SensorModel, build_bare_payload,
                                            build_envelope_payload, build_single_payload, make_sensors)

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
METRICS = ("temperature", "humidity", "pressure")
PLAUSIBLE = {"temperature": (5.0, 37.0), "humidity": (10.0, 80.0), "pressure": (995.0, 1032.0)}
BARE_NUMBER = re.compile(rb"-?\d+(\.\d+)?")  # what the decode stage accepts on <root>/<sensor>/<metric>


def factory(**kw) -> MessageFactory:
    kw.setdefault("seed", 1)
    return MessageFactory(make_sensors(kw.pop("sensors", 4)), kw.pop("metrics", METRICS), **kw)


def test_fleet_ids_types_and_locations_are_stable():
    fleet = make_sensors(10, prefix="lab")
    assert [s.sensor_id for s in fleet][:3] == ["lab-0000", "lab-0001", "lab-0002"]
    assert fleet[9].location == "hall-1" and fleet[3].location == "hall-3"
    assert {s.sensor_type for s in fleet} == {"environment"}
    assert make_sensors(10, prefix="lab") == fleet


def test_envelope_message_has_documented_fields_and_all_metrics():
    topic, payload = factory(root="sensors").next_message(T0 + 0.1234)
    assert topic == "sensors/sim-0000"
    obj = json.loads(payload)
    assert list(obj) == ["type", "location", "timestamp", "readings"]
    assert obj["type"] == "environment" and obj["location"] == "hall-0"
    assert obj["timestamp"] == pytest.approx(T0 + 0.123, abs=1e-6)
    assert set(obj["readings"]) == set(METRICS)
    for metric, value in obj["readings"].items():
        lo, hi = PLAUSIBLE[metric]
        assert isinstance(value, float) and math.isfinite(value) and lo <= value <= hi


def test_single_reading_messages_rotate_metrics_per_sensor():
    f = factory(sensors=3, per_message="1")
    msgs = [f.next_message(T0) for _ in range(9)]
    assert [t for t, _ in msgs[:3]] == ["sensors/sim-0000", "sensors/sim-0001", "sensors/sim-0002"]
    objs = [json.loads(p) for _, p in msgs]
    assert [o["metric"] for o in objs] == ["temperature"] * 3 + ["humidity"] * 3 + ["pressure"] * 3
    for o in objs:
        assert set(o) == {"metric", "value", "type", "location", "timestamp"}
        assert math.isfinite(o["value"])


def test_per_metric_topics_carry_bare_numbers():
    f = factory(sensors=2, topic_style="per-metric", per_message="1", root="plant")
    msgs = [f.next_message(T0) for _ in range(6)]
    assert msgs[0][0] == "plant/sim-0000/temperature" and msgs[3][0] == "plant/sim-0001/humidity"
    for topic, payload in msgs:
        metric = topic.rsplit("/", 1)[1]
        assert BARE_NUMBER.fullmatch(payload), payload
        lo, hi = PLAUSIBLE[metric]
        assert lo <= float(payload) <= hi


def test_payload_builders_directly():
    sensor = make_sensors(1)[0]
    assert json.loads(build_envelope_payload(sensor, {"temperature": 20.5}, T0))["readings"] == {"temperature": 20.5}
    assert json.loads(build_single_payload(sensor, "humidity", 44.0, T0))["metric"] == "humidity"
    assert build_bare_payload(-3.1) == b"-3.10"


def test_bad_style_combinations_are_refused():
    with pytest.raises(ValueError):
        factory(topic_style="per-metric", per_message="all")
    with pytest.raises(ValueError):
        factory(topic_style="xml")


@pytest.mark.parametrize("metric", METRICS)
def test_values_stay_plausible_over_a_day_without_anomalies(metric):
    lo, hi = PLAUSIBLE[metric]
    for i in range(20):
        model = SensorModel(7, f"sim-{i:04d}", metric)
        values = [model.value_at(T0 + h * 600) for h in range(144)]
        assert all(math.isfinite(v) and lo <= v <= hi for v in values)


def test_daily_cycle_is_warm_in_the_afternoon_and_humid_at_night():
    afternoon, night = T0 + 15 * 3600, T0 + 3 * 3600
    for i in range(10):
        t = SensorModel(1, f"sim-{i:04d}", "temperature")
        h = SensorModel(1, f"sim-{i:04d}", "humidity")
        assert t.expected_at(afternoon) - t.expected_at(night) > 7
        assert h.expected_at(night) - h.expected_at(afternoon) > 14


def test_sensors_differ_and_drift_slowly():
    a, b = SensorModel(1, "sim-0000", "temperature"), SensorModel(1, "sim-0001", "temperature")
    assert a.expected_at(T0) != b.expected_at(T0)
    # Drift moves the baseline over days, not between two readings a second apart.
    assert abs(a.expected_at(T0 + 1) - a.expected_at(T0)) < 0.01


def test_deterministic_for_a_seed_and_different_across_seeds():
    def stream(seed):
        f = factory(seed=seed, plan=Plan(per_hour=600.0, warmup_s=0.5, settle_s=0.2))
        return [f.next_message(T0 + k * 0.01) for k in range(200)]

    assert stream(1) == stream(1)
    assert stream(1) != stream(2)


def test_values_do_not_depend_on_how_the_fleet_is_split():
    whole = factory(sensors=4, per_message="1", metrics=("temperature",))
    half = MessageFactory(make_sensors(4)[0::2], ("temperature",), seed=1, per_message="1")
    w = [whole.next_message(T0) for _ in range(8)]
    h = [half.next_message(T0) for _ in range(4)]
    assert [w[0], w[2], w[4], w[6]] == h


def test_pacer_schedule_math():
    p = Pacer(100.0, total=250)
    assert p.burst == 1
    assert p.due(-0.1) == 0 and p.due(0.0) == 1 and p.due(0.0099) == 1 and p.due(0.01) == 2
    assert p.due(1.0) == 101 and p.due(99.0) == 250
    assert p.wake_at(1) == pytest.approx(0.01) and p.wake_at(250) == pytest.approx(2.49)
    fast = Pacer(10_000.0)
    assert fast.burst == 50 and fast.wake_at(50) == pytest.approx(99 / 10_000)
    assert total_for(200, 2) == 400 and total_for(0.5, 3) == 2 and total_for(100, 0) is None


class FakeTime:
    """A clock whose sleeps overshoot at random, like a loaded machine."""

    def __init__(self, overshoot: float):
        self.now, self.overshoot, self.rng = 0.0, overshoot, random.Random(0)

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s + self.rng.uniform(0, self.overshoot)


@pytest.mark.parametrize("rate,overshoot", [(200.0, 0.002), (10_000.0, 0.003), (3.0, 0.05)])
def test_publish_loop_holds_the_rate_without_drift(rate, overshoot):
    ft, stamps = FakeTime(overshoot), []
    f = factory(sensors=3)
    duration = 5.0
    sent = publish_loop(lambda topic, payload: stamps.append(ft.now), f, Pacer(rate, total_for(rate, duration)),
                        duration, lambda: False, clock=ft.clock, sleep=ft.sleep, wall=ft.clock)
    assert sent == len(stamps) == total_for(rate, duration)
    # Every message goes out at or after its slot and never more than one burst + overshoot late.
    pacer = Pacer(rate)
    for n in range(0, sent, max(1, sent // 50)):
        assert n / rate - 1e-9 <= stamps[n] <= n / rate + pacer.burst / rate + overshoot + 1e-9
    # Half way through, the count lags by one burst and one overshoot at most: overshoot did not accumulate.
    half = sum(1 for s in stamps if s < duration / 2)
    assert half == pytest.approx(rate * duration / 2, abs=pacer.burst + overshoot * rate + 1)


def test_publish_loop_stops_when_asked():
    ft, sent_topics = FakeTime(0.0), []
    stop_after = lambda: len(sent_topics) >= 10  # noqa: E731
    n = publish_loop(lambda t, p: sent_topics.append(t), factory(), Pacer(100.0), 0, stop_after,
                     clock=ft.clock, sleep=ft.sleep, wall=ft.clock)
    assert n == 10


def test_process_split_and_auto_count():
    assert auto_processes(200, 5, cpus=2) == 1
    assert auto_processes(10_000, 100, cpus=2) == 2
    assert auto_processes(50_000, 100, cpus=4) == 4
    assert auto_processes(10_000, 1, cpus=4) == 1
    slices = split_fleet(10, 3)
    assert sorted(i for s in slices for i in s) == list(range(10)) and [len(s) for s in slices] == [4, 3, 3]


def test_parse_args_defaults_and_validation():
    o = parse_args(["--sensors", "5", "--rate", "200", "--duration", "2"])
    assert (o.per_message, o.qos, o.processes, o.root, o.metrics) == ("all", 1, 1, "sensors", METRICS)
    assert parse_args(["--topic-style", "per-metric"]).per_message == "1"
    assert parse_args(["--metrics", "pressure,temperature"]).metrics == ("pressure", "temperature")
    assert parse_args(["--rate", "10000", "--sensors", "100", "--processes", "3"]).processes == 3
    for bad in (["--topic-style", "per-metric", "--readings-per-message", "all"], ["--root", "a/b"],
                ["--root", "sensors/#"], ["--metrics", "co2"], ["--anomalies", "-1"], ["--anomaly-kinds", "spike,bogus"], ["--rate", "0"],
                ["--sensors", "2", "--processes", "3"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_summary_line():
    s = Summary(400, 2.0)
    assert s.rate == 200.0 and s.line() == "published=400 duration_s=2.000 rate=200.0"
    assert Summary(0, 0.0).rate == 0.0
