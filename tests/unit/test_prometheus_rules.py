"""deploy/prometheus: promtool accepts the rules and the example config, and the rule unit tests
(deploy/prometheus/tests/*.yml) pass and make every alerting rule fire at least once."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "alerts.yml"
RULE_TESTS = sorted((PROM / "tests").glob("*.yml"))


def promtool(*args: str) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed: run scripts/ensure-test-tools.sh (Debian package prometheus)")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, cwd=PROM)


def alert_names() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules_and_the_example_config():
    for args in (("check", "rules", str(RULES)), ("check", "config", str(PROM / "prometheus.yml"))):
        done = promtool(*args)
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_rule_unit_tests_pass():
    assert RULE_TESTS, "no rule tests in deploy/prometheus/tests"
    done = promtool("test", "rules", *map(str, RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alerting_rule_is_tested_firing_and_quiet():
    fired, quiet = set(), set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = alert_names()
    assert len(names) >= 7 and len(set(names)) == len(names)
    assert set(names) - fired == set(), "rules never seen firing in a promtool test"
    assert set(names) - quiet == set(), "rules never seen staying quiet in a promtool test"


def test_the_rules_read_only_metrics_the_pipeline_declares():
    """A renamed metric would leave a rule silent for ever: every pipeline_* name in the rules is exported."""
    import re

    from tests.grafana_dashboards import exported_metric_names

    exported = exported_metric_names()
    used = set(re.findall(r"\bpipeline_[a-z_]+", RULES.read_text()))
    used.discard("pipeline_")
    assert used and used <= exported, used - exported
