"""Every shipped recipe (deploy/formats/) end to end: one daemon loaded as `--config config.yaml --config
<recipe> ...` (each recipe's topics under this test's root), the documented payloads of each family
(tests/fixtures/recipes/) published to Mosquitto with their times moved to now, and the rows PostgreSQL
stores compared with what each fixture expects: sensor ids, metrics, values and times; housekeeping topics
ignored, nothing dead-lettered."""
from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import msgspec
import pytest
import yaml
from paho.mqtt.client import topic_matches_sub

from pipeline.config import load, recipes
from pipeline.config.sources import SourceMapping
from pipeline.stages.mapping import source_filters
from tests.integration.clients import Publisher, RunningPipeline, wait_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "recipes"
FAMILIES = {"telegraf_json": "telegraf-json"}
# Recipes taking the same topics as another (one Telegraf output sends one data_format): a level further down here.
ALTERNATIVES = {"telegraf-json"}


def cases() -> list[tuple[str, str, dict]]:
    """(family dir, recipe, fixture) of every fixture whose recipe is shipped (and is a mapping: sparkplug.yaml is a
    host application with tests of its own)."""
    shipped = {n for n in recipes.names() if recipes.load(n).get("sources")}
    out = []
    for path in sorted(FIXTURES.glob("*/*.json")):
        recipe = FAMILIES.get(path.parent.name, path.parent.name)
        if recipe in shipped:
            out.append((path.parent.name, recipe, json.loads(path.read_text())))
    return out


def _iso_shift(text: str, delta: float) -> str:
    naive = datetime.fromisoformat(text).tzinfo is None
    dt = datetime.fromisoformat(text if not naive else text + "+00:00")
    moved = datetime.fromtimestamp(dt.timestamp() + delta, timezone.utc)
    return moved.replace(tzinfo=None).isoformat(timespec="microseconds") if naive else moved.isoformat(timespec="microseconds")


def _shift_field(node, steps: list[str], fmt: str, delta: float) -> None:
    for step in steps[:-1]:
        node = node[step]
    value = node[steps[-1]]
    node[steps[-1]] = _iso_shift(value, delta) if fmt == "iso" else value + delta


def moved_to_now(case: dict, mapping, delta: float) -> bytes:
    """The fixture's payload with every event time `delta` seconds later (the stores keep recent readings only)."""
    payload = case["payload"]
    if isinstance(payload, str):  # line protocol: the last number of each line is its time in ns
        if mapping.timestamp is None:
            return payload.encode()
        return re.sub(r" (\d{16,19})$", lambda m: f" {int(m.group(1)) + round(delta * 1e9)}", payload,
                      flags=re.M).encode()
    tree = json.loads(json.dumps(payload))
    if mapping.encoding == "telegraf_json":  # the encoding reads `timestamp` (s) of one metric or of a batch's
        for metric in tree.get("metrics", [tree]):
            metric["timestamp"] += delta
    elif mapping.timestamp is not None:
        records = [tree] if mapping.records is None else tree[mapping.records]
        for record in records:
            _shift_field(record, mapping.timestamp.path.split("."), mapping.timestamp.format, delta)
    return json.dumps(tree).encode()


@pytest.mark.timeout(180)
def test_every_recipe_stores_its_familys_documented_readings(env, tmp_path):
    all_cases = cases()
    names = sorted({recipe for _, recipe, _ in all_cases})
    assert {"tasmota", "zigbee2mqtt", "shelly", "ttn", "chirpstack"} <= set(names)
    # The daemon subscribes each mapping's topic itself. mqtt.topics take what else a site would: here the
    # families' housekeeping topics the recipes do not subscribe (tele/+/STATE, .../join), to see them ignored.
    def root(recipe: str) -> str:
        return f"{env.root}/alt" if recipe in ALTERNATIVES else env.root

    filters = [f for name in names for f in source_filters(tuple(_specs(name, root(name))))]
    extra = sorted({f"{root(recipe)}/{case['topic']}" for _, recipe, case in all_cases if case.get("ignored")
                    and not any(topic_matches_sub(f, f"{root(recipe)}/{case['topic']}") for f in filters)})
    paths = [env.write_config(tmp_path / "config.yaml", mqtt={"topics": [f"{env.root}/sensors/#", *extra]})]
    for name in names:
        paths.append(tmp_path / f"{name}.yaml")
        paths[-1].write_text(yaml.safe_dump(recipes.under_root(recipes.load(name), root(name))))
    settings = env.migrate(load(paths, env={}))
    mappings = {m.name: m for m in settings.config.sources}

    now = time.time() - 120
    messages, expected, receive_time = [], {}, []
    for i, (family, recipe, case) in enumerate(all_cases):
        mapping = next(m for m in settings.config.sources if m.name == recipe_mapping(recipe, mappings))
        times = [row[4] for row in case.get("expect", []) if row[4] is not None]
        delta = (now + i) - min(times) if times else 0.0
        messages.append((f"{root(recipe)}/{case['topic']}", moved_to_now(case, mapping, delta)))
        for sensor, metric, value, _unit, ts in case.get("expect", []):
            expected.setdefault(recipe, []).append((sensor, metric, float(value), None if ts is None else ts + delta))
    total = sum(len(rows) for rows in expected.values())

    with RunningPipeline(settings, env.metrics()) as p:
        t0 = time.time()
        pub = Publisher()
        pub.publish_all(messages)
        pub.close()
        wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] >= total, timeout=60,
                 what=f"{total} measurement rows")
        t1 = time.time()
        time.sleep(1.0)  # anything more (a duplicate, a reading from an ignored topic) has a moment to show
        counts = {c["name"]: c for c in p.mapping_stats.snapshot()}

    rows = env.query("SELECT sensor_id, metric, value, extract(epoch FROM timestamp)::float8 FROM measurements")
    assert len(rows) == total, sorted(rows)
    left = list(rows)
    for recipe, wanted in expected.items():
        for sensor, metric, value, ts in wanted:
            def fits(row, sensor=sensor, metric=metric, value=value, ts=ts):
                if row[:2] != (sensor, metric) or row[2] != pytest.approx(value):
                    return False
                # No time in the payload: the receive time.
                return t0 - 1 <= row[3] <= t1 + 1 if ts is None else abs(row[3] - ts) <= 2e-6
            match = next((row for row in left if fits(row)), None)
            assert match is not None, (f"{recipe}: {sensor} {metric} {value} at {ts} not stored; "
                                       f"stored for it: {[r for r in rows if r[:2] == (sensor, metric)]}")
            left.remove(match)
    ignored = {}
    for _, recipe, case in all_cases:
        if case.get("ignored"):
            name = recipe_mapping(recipe, mappings)
            ignored[name] = ignored.get(name, 0) + 1
    for name, c in counts.items():
        assert c["refused"] == 0, (name, c)
        assert c["ignored"] == ignored.get(name, 0), (name, c)
    types = dict(env.query("SELECT sensor_id, type FROM sensors"))
    assert types["tasmota_A1B2C3"] == "tasmota" and types["0102030405060708"] == "lorawan"


def _specs(name: str, root: str) -> list:
    """A recipe's mappings, its topics under `root`, as the config schema reads them."""
    return [msgspec.convert(m, SourceMapping) for m in recipes.under_root(recipes.load(name), root)["sources"]]


def recipe_mapping(recipe: str, mappings: dict) -> str:
    """The mapping a recipe brings (each recipe's first mapping is named after it)."""
    return recipe if recipe in mappings else next(n for n in mappings if n.startswith(recipe))
