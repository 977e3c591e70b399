"""Rules for the test suite itself: every test checks something, tests/unit mirrors the pipeline package, and in a
parallel run a `serial` test runs alone."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

TESTS = Path(__file__).resolve().parent
# Calls that fail a test by themselves: pytest.raises/fail/warns, and the integration helper that fails on a timeout.
CHECKING_CALLS = {"raises", "fail", "warns", "wait_for", "wait_committed"}


def _checks_directly(fn: ast.AST) -> bool:
    for node in ast.walk(fn):
        if isinstance(node, ast.Assert):
            return True
        if isinstance(node, ast.Call):
            f = node.func
            if (f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)) in CHECKING_CALLS:
                return True
    return False


def _called_names(fn: ast.AST) -> set[str]:
    return {n.func.id for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def unchecked_tests(root: Path) -> list[str]:
    """Test functions with no assert, no pytest.raises/fail/warns, and no call of a helper (by plain name) that
    itself checks something, directly or through other helpers."""
    functions: dict[str, list[ast.AST]] = {}
    trees = {path: ast.parse(path.read_text()) for path in sorted(root.rglob("*.py"))}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.setdefault(node.name, []).append(node)
    checking = {name for name, fns in functions.items() if any(_checks_directly(f) for f in fns)}
    calls = {id(f): _called_names(f) for fns in functions.values() for f in fns}  # walked once, not per round
    grew = True
    while grew:
        grew = False
        for name, fns in functions.items():
            if name not in checking and any(calls[id(f)] & checking for f in fns):
                checking.add(name)
                grew = True
    found = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                if not _checks_directly(node) and not (calls[id(node)] & (checking - {node.name})):
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name}")
    return found


def test_every_test_checks_something():
    assert unchecked_tests(TESTS) == []


def test_the_rule_finds_a_test_that_checks_nothing(tmp_path):
    (tmp_path / "test_x.py").write_text(
        "def helper(x):\n    assert x\n\n"
        "def quiet(x):\n    return x\n\n"
        "def test_silent():\n    quiet(1)\n\n"
        "def test_through_a_helper():\n    helper(1)\n\n"
        "def test_raises(pytest):\n    with pytest.raises(ValueError):\n        int('x')\n")
    assert unchecked_tests(tmp_path) == ["test_x.py:7 test_silent"]


def test_unit_test_folders_mirror_the_package():
    package = TESTS.parent / "pipeline"
    folders = [p.relative_to(TESTS / "unit") for p in (TESTS / "unit").rglob("*")
               if p.is_dir() and p.name != "__pycache__"]
    assert folders and [str(f) for f in folders if not (package / f / "__init__.py").exists()] == []


SPANS = """
import os, time
import pytest

def span(name):
    start = time.time()
    time.sleep(0.5)
    with open(os.path.join(os.environ["SPAN_DIR"], name), "w") as f:
        f.write(f"{start} {time.time()}")

@pytest.mark.parametrize("n", range(6))
def test_beside(n):
    span(f"beside-{n}")

@pytest.mark.serial
def test_alone():
    span("alone")
"""


def test_a_serial_test_runs_alone_in_a_parallel_run(tmp_path):
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    serial: runs alone\n")
    (tmp_path / "test_spans.py").write_text(SPANS)
    spans = tmp_path / "spans"
    spans.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "TESTS_"))} | {"SPAN_DIR": str(spans)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "3", "-q", "-p", "no:cacheprovider"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = {p.name: tuple(map(float, p.read_text().split())) for p in spans.iterdir()}
    alone = got.pop("alone")
    assert len(got) == 6 and [n for n, (a, b) in got.items() if a < alone[1] and alone[0] < b] == []
    ends = sorted(got.values())
    assert any(ends[i + 1][0] < ends[i][1] for i in range(len(ends) - 1))  # the others did run side by side
