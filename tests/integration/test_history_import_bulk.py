"""The history import at scale, in the faults tier (tens of seconds, run beside the rest of the suite): a million
rows, then the same file again and a copy of it (nothing doubled); an import killed with SIGKILL halfway and run
again (nothing lost, nothing doubled, the aggregates of the whole range rebuilt)."""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import ROOT
from tests.integration.test_history_import import run, write_rows

pytestmark = pytest.mark.faults
COUNTS = "SELECT count(*), count(DISTINCT (sensor_id, metric, timestamp)) FROM measurements"


@pytest.mark.timeout(600)
def test_a_million_rows_then_the_same_file_and_a_copy_of_it_double_nothing(env, tmp_path):
    settings = env.migrate()
    path = tmp_path / "million.csv"
    write_rows(path, 1_000_000)
    started = time.monotonic()
    code, out, err = run(settings, str(path))
    seconds = time.monotonic() - started
    assert code == 0, err[-2000:]
    assert env.query(COUNTS) == [(1_000_000, 1_000_000)]
    assert env.query("SELECT count(*) FROM sensors") == [(200,)]
    assert env.query("SELECT period, sum(count) FROM aggregations GROUP BY 1 ORDER BY 1") == [
        ("1d", 1_000_000), ("1h", 1_000_000), ("1m", 1_000_000), ("5m", 1_000_000)]
    rate = re.search(r"in ([\d.]+) s \(([\d,]+) readings/s stored\)", out)
    assert rate, out
    print(f"\nimport of 1,000,000 CSV rows: {rate.group(2)} rows/s ({rate.group(1)} s, then the aggregates; "
          f"{seconds:.1f} s in all)")

    code, out, err = run(settings, str(path))  # the same file: finished before, skipped by its checkpoint
    assert code == 0 and "skipped" in out and env.query(COUNTS) == [(1_000_000, 1_000_000)]
    copy = tmp_path / "copy.csv"  # the same readings under another name: read again, every one already stored
    shutil.copy(path, copy)
    code, out, err = run(settings, str(copy))
    assert code == 0 and f"{copy}: 0 stored, 1000000 already stored, 0 bad line(s)" in out
    assert env.query(COUNTS) == [(1_000_000, 1_000_000)]


def stop_at(env, cmd: list[str], past: int, sig: int) -> subprocess.CompletedProcess:
    """Run the import, send `sig` once its checkpoint passed byte `past`, and wait for the process to end."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    offset = 0
    while offset < past and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if env.query("SELECT to_regclass('import_checkpoints') IS NOT NULL")[0][0]:
            offset = (env.query("SELECT max(byte_offset) FROM import_checkpoints")[0][0] or 0)
    assert proc.poll() is None, "the import ended before it could be stopped"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.timeout(600)
def test_an_import_stopped_by_ctrl_c_then_killed_and_run_again_loses_and_doubles_nothing(env, tmp_path):
    settings = env.migrate()
    config = env.write_config(tmp_path / "config.yaml")
    path = tmp_path / "history.csv"
    n = 300_000
    write_rows(path, n)
    size = path.stat().st_size
    cmd = [sys.executable, "-m", "pipeline.tools.import", "--config", str(config), "--batch", "10000", str(path)]

    interrupted = stop_at(env, cmd, size // 4, signal.SIGINT)  # Ctrl-C
    assert interrupted.returncode == 130 and "run the same command again" in interrupted.stderr
    first, distinct = env.query(COUNTS)[0]
    assert 0 < first < n and first == distinct

    killed = stop_at(env, cmd, size // 2, signal.SIGKILL)  # a crash
    assert killed.returncode == -signal.SIGKILL and re.search(r"resuming after line \d+", killed.stderr)
    stored, distinct = env.query(COUNTS)[0]
    assert first < stored < n and stored == distinct
    assert env.query("SELECT done FROM import_checkpoints") == [(False,)]

    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert re.search(r"resuming after line \d+", again.stderr)
    assert env.query(COUNTS) == [(n, n)]
    assert env.query("SELECT done, rebuilt, stored FROM import_checkpoints") == [(True, True, n)]
    # The aggregates cover the whole file, the part before the stops too.
    assert env.query("SELECT sum(count) FROM aggregations WHERE period = '1m'") == [(n,)]
    assert "\r" not in again.stderr
