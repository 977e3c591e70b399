"""Shared fixtures and the test tiers. Integration fixtures live in tests/integration/conftest.py."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# Tier by directory; the `faults` tier is marked in the fault-injection modules themselves (pytestmark).
TIER_DIRS = {"unit": ROOT / "tests" / "unit", "integration": ROOT / "tests" / "integration"}
# Tests never read a developer's .env or the PIPELINE__* variables of the shell that runs them.
for name in [n for n in os.environ if n.startswith("PIPELINE__")]:
    del os.environ[name]


@pytest.fixture(autouse=True)
def _state_dir(tmp_path_factory, monkeypatch):
    """Spools (pipeline/agents/spool.py) go to a directory of this test, never the user's or another test's."""
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath)).resolve()
        for tier, folder in TIER_DIRS.items():
            if folder in path.parents:
                item.add_marker(getattr(pytest.mark, tier))
        if item.get_closest_marker("faults") and not item.get_closest_marker("integration"):
            raise pytest.UsageError(f"{item.nodeid}: `faults` is a kind of integration test (tests/integration)")
