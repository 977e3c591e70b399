"""Plug-ins registered from this module alone, run by the real daemon: a payload format whose device id is the
third topic level, and a detector with one slot of per-series history."""
from __future__ import annotations

import json
import time

import msgspec
import pytest

from pipeline.operators.alerts.detectors import CLEAR, OUT_N, RUN_N, SeriesDetector, Signal
from pipeline.records import Invalid
from pipeline.registry import detectors, formats
from pipeline.stages.decode import Candidate
from tests.integration.clients import Publisher, RunningPipeline, read_topic, wait_for


# -- a format: "sensor,metric,value" lines on <root>/site/<sensor_id>/csv -------------------------------------
def decode_csv(msg, levels, limits):
    """One reading a line; the line's sensor must be the topic's."""
    out = []
    for line in msg.payload.decode().splitlines():
        sensor, metric, value = line.split(",")
        if sensor != levels["sensor_id"]:
            raise Invalid("csv_sensor_mismatch", f"{sensor!r} on the topic of {levels['sensor_id']!r}")
        out.append(Candidate(sensor, metric, float(value), None, None, None, None, msg))
    return out


CSV = formats.Format("csv_e2e", "{root}/site/{sensor_id}/csv", decode_csv)


# -- a detector: a value above the series' first value times k -------------------------------------------------
class AboveFirstRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    k: float = 2.0
    severity: str = "warning"
    for_s: float = 0.0


class AboveFirst(SeriesDetector):
    """Above `k` times the first value of the series (kept in its one slot)."""

    type = "above_first"

    def _judge(self, s, value, ts, rule):
        self.with_history(s)
        first = s[self.offset]
        if not first:
            s[self.offset] = value
            return None
        limit = rule.k * first
        if value > limit:
            return Signal(rule.severity, bound=limit, detail=f"above {rule.k:g} times its first value {first:g}")
        return CLEAR


ABOVE_FIRST = detectors.DetectorSpec("above_first", AboveFirstRule, lambda offset, history: AboveFirst().placed(
    offset, history), slots=1, history=True, value_first=True)


@pytest.fixture
def plugins():
    """Registered before the daemon builds anything, removed after (other tests keep the stock layout)."""
    formats.register(CSV)
    detectors.register(ABOVE_FIRST)
    yield
    detectors.unregister(ABOVE_FIRST.name)
    formats.unregister(CSV.name)


def test_a_registered_format_is_decoded_stored_and_keyed_by_its_third_level(env, plugins):
    settings = env.migrate(env.settings(processing={"formats": ["csv_e2e", "log", "json", "number"]},
                                        validation={"metrics": "any"}))
    root = env.root
    with RunningPipeline(settings, env.metrics()):
        pub = Publisher()
        pub.publish_all([(f"{root}/site/dev-42/csv", "dev-42,temperature,21.5\ndev-42,humidity,40.25"),
                         (f"{root}/hall-b", json.dumps({"metric": "pressure", "value": 1012.5})),
                         (f"{root}/site/dev-43/csv", "dev-99,temperature,1")])
        pub.close()
        wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] == 3, what="3 measurement rows")
        raw = read_topic(settings.config.kafka.topics.raw, expected=3)
        dead = read_topic(settings.config.kafka.topics.dead_letter, expected=1)
    rows = env.query("SELECT sensor_id, metric, value FROM measurements ORDER BY sensor_id, metric")
    assert rows == [("dev-42", "humidity", 40.25), ("dev-42", "temperature", 21.5), ("hall-b", "pressure", 1012.5)]
    keys = {dict(m.headers())["mqtt_topic"].decode().removeprefix(root): m.key() for m in raw}
    assert keys == {"/site/dev-42/csv": b"dev-42", "/hall-b": b"hall-b", "/site/dev-43/csv": b"dev-43"}
    assert [dict(m.headers())["reason"] for m in dead] == [b"csv_sensor_mismatch"]


def test_a_registered_detector_raises_an_alert_from_config_beside_the_built_ins(env, plugins):
    detection = {"offline_after_s": 0, "metrics": {"boiler_temp": {
        "outlier": {"z_warning": 50, "min_samples": 30}, "stuck": {"count": 100}, "above_first": {"k": 2}}}}
    settings = env.migrate(env.settings(detection=detection, validation={"metrics": "any"}))
    assert settings.config.detection.metrics["boiler_temp"].rule("above_first") == AboveFirstRule(k=2)
    lay = detectors.layout()
    assert (lay.offsets["outlier"], lay.offsets["stuck"], lay.offsets["above_first"], lay.history) == (1, 4, 9, 10)
    root, t0 = env.root, round(time.time()) - 60
    with RunningPipeline(settings, env.metrics()) as p:
        pub = Publisher()
        pub.publish_all([(f"{root}/boiler-1", json.dumps({"metric": "boiler_temp", "value": v, "timestamp": t0 + i}))
                         for i, v in enumerate([10, 12, 15, 25])])
        pub.close()
        wait_for(lambda: env.query("SELECT count(*) FROM alerts")[0][0] == 1, what="the above_first alert")
        series = p.alerts.evaluator.series[("boiler-1", "boiler_temp")]
        # The built-ins' slots hold what they did (outlier: 4 readings in its statistics, stuck: a run of one).
        assert (series[OUT_N], series[RUN_N], series[9], len(series)) == (4, 1, 10, 10)
    [(sensor, metric, kind, severity, message)] = env.query(
        "SELECT sensor_id, metric, type, severity, message FROM alerts")
    assert (sensor, metric, kind, severity) == ("boiler-1", "boiler_temp", "above_first", "warning")
    assert message.startswith("Warning: boiler_temp of sensor boiler-1 is 25, above 2 times its first value 10")
