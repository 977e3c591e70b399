"""Shared fixtures, the test tiers and the `serial` rule for parallel runs. Integration fixtures live in
tests/integration/conftest.py."""
import fcntl
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# Set by the controller of a parallel run (pytest -n N) for its workers: where the `serial` lock lives.
SERIAL_LOCK_DIR = "TESTS_SERIAL_LOCK_DIR"
RUN_DIR = "TESTS_RUN_DIR"  # the run's own folder (tests/integration/db_template.py)
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
    items.sort(key=_start_order)


def _start_order(item) -> int:
    """The order a parallel run hands tests out in (pytest-xdist assigns them as workers free up, in collection
    order): the tests that run for tens of seconds first, so that none of them starts last and becomes the run's
    tail, then the other integration tests, then the unit tests (milliseconds each: they fill the gaps at the end),
    and a `serial` test last, when the other workers have nothing left and it waits for no long test to finish.
    In alphabetical order the two 70 s spool tests started in the last minute of an 8-minute run. Stable: tests
    of one order keep theirs."""
    if item.get_closest_marker("serial"):
        return 3
    if item.get_closest_marker("faults") or item.get_closest_marker("long"):
        return 0
    return 1 if item.get_closest_marker("integration") else 2


def pytest_configure(config):
    """The controller of a parallel run makes the folder of the `serial` lock; its workers inherit its name. Every
    run has a folder of its own (what its workers share: the database templates they made)."""
    if hasattr(config, "workerinput"):
        return
    if getattr(config.option, "numprocesses", None):
        os.environ[SERIAL_LOCK_DIR] = tempfile.mkdtemp(prefix="pytest-serial-")
    os.environ[RUN_DIR] = tempfile.mkdtemp(prefix="pytest-run-")


def pytest_unconfigure(config):
    if hasattr(config, "workerinput"):
        return
    if SERIAL_LOCK_DIR in os.environ:
        shutil.rmtree(os.environ.pop(SERIAL_LOCK_DIR), ignore_errors=True)
    if RUN_DIR in os.environ:
        run_dir = Path(os.environ.pop(RUN_DIR))
        if (run_dir / "db-templates").exists():
            from tests.integration.db_template import drop_templates

            drop_templates(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)


@contextmanager
def _held(folder: Path, exclusive: bool):
    """Shared for most tests, exclusive for a `serial` one, across every worker of the run."""
    turnstile = open(folder / "turnstile", "a")
    main = open(folder / "lock", "a")
    try:
        # Once a serial test waits at the turnstile no other test starts, so the other workers' overlapping
        # shared locks cannot starve it.
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(main, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        if not exclusive:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        yield
    finally:
        main.close()
        turnstile.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    """In a parallel run (`make test`: pytest-xdist) a test marked `serial` runs alone: the other workers wait
    between their tests. The wait is outside pytest-timeout's clock (this wrapper holds its wrapper) and --durations."""
    folder = os.environ.get(SERIAL_LOCK_DIR)
    if folder is None or not hasattr(item.config, "workerinput"):  # one process: every test runs alone anyway
        return (yield)
    with _held(Path(folder), exclusive=item.get_closest_marker("serial") is not None):
        return (yield)
