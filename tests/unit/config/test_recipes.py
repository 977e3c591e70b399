"""Each shipped recipe (deploy/formats/<family>.yaml), loaded through the real config parser and run through the
real pure stages (decode with the mapping engine, validate, units), on payloads shaped as each project documents
them (tests/fixtures/recipes/<family>/*.json, the source in each): the readings stored, the topics ignored, the Kafka key."""
from __future__ import annotations

import functools
import json
import re
import tempfile
from pathlib import Path

import pytest
import yaml
from paho.mqtt.client import topic_matches_sub
from prometheus_client import CollectorRegistry

from pipeline.app.build import build_pure_stages
from pipeline.config import Settings, load, recipes
from pipeline.observability.metrics import Metrics
from pipeline.records import RawMessage, Reading
from pipeline.runtime.chain import StageChain
from pipeline.stages.formats import router
from pipeline.stages.mapping import source_filters

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "recipes"
# Tests put every recipe under a root level of their own; here one fixed root, so keys and topics read plainly.
TEST_ROOT = "t-recipes"
# Fixture directory -> recipe (telegraf_json: deploy/formats/telegraf-json.yaml).
FAMILIES = {"telegraf_json": "telegraf-json"}
TWENTY_YEARS_S = 20 * 365 * 86400.0
# Recipes that take the same topics as another (Telegraf sends one data_format per output): never loaded together.
ALTERNATIVES = {"telegraf-json": "telegraf"}


def recipe_of(family: str) -> str:
    return FAMILIES.get(family, family)


def fixtures(kind: str) -> list:
    """pytest params (family, fixture) of every fixture with `kind` (expect, ignored, unsubscribed)."""
    out = []
    for path in sorted(FIXTURES.glob("*/*.json")):
        case = json.loads(path.read_text())
        if kind in case:
            out.append(pytest.param(path.parent.name, case, id=f"{path.parent.name}/{path.stem}"))
    return out


def payload_bytes(case: dict) -> bytes:
    payload = case["payload"]
    return payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()


@functools.lru_cache(maxsize=None)  # Settings are frozen; loading all the recipes for each case cost seconds
def settings_for(*names: str, root: str = TEST_ROOT) -> Settings:
    """What `--config config.yaml --config deploy/formats/<name>.yaml ...` loads (the real loader, file by file),
    each recipe's topics under `root`, and a last file accepting old fixture times (the documents' examples are
    from past years)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = [ROOT / "config.yaml"]
        for name in names:
            rooted = Path(tmp) / f"{name}.yaml"
            rooted.write_text(yaml.safe_dump(recipes.under_root(recipes.load(name), root)))
            paths.append(rooted)
        last = Path(tmp) / "test.yaml"
        last.write_text(yaml.safe_dump({"validation": {"max_age_s": TWENTY_YEARS_S}}))
        return load(paths + [last], env={})


def run(settings: Settings, topic: str, payload: bytes, received_at: float) -> tuple[list[Reading], list]:
    chain = StageChain(build_pure_stages(settings), Metrics(CollectorRegistry()))
    out, dead = [], []
    chain.run(RawMessage(f"{TEST_ROOT}/{topic}", payload, received_at), out, dead)
    return out, dead


def as_rows(readings: list[Reading]) -> list[tuple]:
    return [(r.sensor_id, r.metric, r.value, r.unit or "", r.ts) for r in readings]


@pytest.mark.parametrize("family,case", fixtures("expect"))
def test_a_recipe_stores_the_documented_payloads_readings(family, case):
    received_at = 1_800_000_000.0  # no fixture's own time: a reading without one takes the receive time
    out, dead = run(settings_for(recipe_of(family)), case["topic"], payload_bytes(case), received_at)
    assert dead == [], [(d.reason, d.error) for d in dead]
    expected = [(s, m, v, u, received_at if ts is None else ts) for s, m, v, u, ts in case["expect"]]
    got = as_rows(out)
    assert sorted(r[:4] for r in got) == sorted(r[:4] for r in expected)
    for (s, m, _v, _u, ts), row in zip(sorted(expected), sorted(got)):
        assert row[4] == pytest.approx(ts, abs=1e-6), (s, m)
    assert all(type(r.value) in (int, float) for r in out)


@pytest.mark.parametrize("family,case", fixtures("ignored"))
def test_a_recipe_ignores_its_familys_housekeeping_topics(family, case):
    settings = settings_for(recipe_of(family))
    topic = f"{TEST_ROOT}/{case['topic']}"
    fmt, _ = router(settings.config).route(RawMessage(topic, b"", 0.0), topic.split("/"))
    assert fmt.name.startswith(f"{settings.config.sources[0].name}.ignore[")
    out, dead = run(settings, case["topic"], payload_bytes(case), 1_800_000_000.0)
    assert (out, dead) == ([], [])


@pytest.mark.parametrize("family,case", fixtures("unsubscribed"))
def test_a_recipe_does_not_subscribe_its_familys_other_topics(family, case):
    settings = settings_for(recipe_of(family))
    topic = f"{TEST_ROOT}/{case['topic']}"
    assert not any(topic_matches_sub(f, topic) for f in source_filters(settings.config.sources))


@pytest.mark.parametrize("family,case", [c for c in fixtures("expect") if c.values[1]["expect"]])
def test_a_recipe_subscribes_its_topics_and_keys_kafka_by_the_device_level(family, case):
    settings = settings_for(recipe_of(family))
    topic = f"{TEST_ROOT}/{case['topic']}"
    assert any(topic_matches_sub(f, topic) for f in source_filters(settings.config.sources))
    sensors = {row[0] for row in case["expect"]}
    key = router(settings.config).key(topic.encode()).decode()
    # The device's own level(s) of the topic, as written (the sensor id is that name by the naming rule).
    assert {re.sub(r"[^A-Za-z0-9_.:\-]+", "_", key)} == sensors


def test_every_recipe_loads_alone_and_all_together():
    names = recipes.names()
    assert {"tasmota", "zigbee2mqtt", "shelly", "esphome", "ttn", "chirpstack", "telegraf", "telegraf-json"} <= set(names)
    together = settings_for(*together_names()).config.sources
    assert len({s.name for s in together}) == len(together)  # no two recipes share a mapping name
    for fixture_dir in FIXTURES.iterdir():
        if fixture_dir.is_dir():
            assert recipe_of(fixture_dir.name) in names, fixture_dir.name


def together_names() -> list[str]:
    return [n for n in recipes.names() if n not in ALTERNATIVES]


def test_alternative_recipes_take_the_same_topics():
    for name, other in ALTERNATIVES.items():
        assert [s.topic for s in settings_for(name).config.sources] == [s.topic for s in settings_for(other).config.sources]


@pytest.mark.parametrize("family,case", [c for c in fixtures("expect") if recipe_of(c.values[0]) not in ALTERNATIVES])
def test_all_recipes_together_give_each_payload_the_same_readings(family, case):
    """Merged (what a site with several families runs), no recipe takes another family's topics."""
    alone, _ = run(settings_for(recipe_of(family)), case["topic"], payload_bytes(case), 1_800_000_000.0)
    merged, dead = run(settings_for(*together_names()), case["topic"], payload_bytes(case), 1_800_000_000.0)
    assert dead == []
    assert as_rows(merged) == as_rows(alone)


def permission_lines(name: str) -> list[str]:
    """The ACL lines a recipe's header names (after "Broker permissions", indented, up to the first non-comment)."""
    lines, inside = [], False
    for line in recipes.path(name).read_text().splitlines():
        if not line.startswith("#"):
            break
        if "Broker permissions" in line:
            inside = True
        elif inside and line.startswith("#   "):
            lines.append(line[4:].strip())
    return lines


@pytest.mark.parametrize("name", [n for n in recipes.names() if n != "sparkplug"])
def test_each_recipe_names_its_broker_permissions_and_the_acl_carries_them(name):
    lines = permission_lines(name)
    assert lines, f"{name}.yaml names no broker permissions"
    acl = (ROOT / "deploy" / "mosquitto.acl").read_text().splitlines()
    for line in lines:
        assert line.split()[0] in ("user", "topic", "pattern"), line
        assert f"#{line}" in acl or line in acl, f"{name}: {line!r} is not in deploy/mosquitto.acl"
