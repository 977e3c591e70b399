"""Start-up against services that are not there yet: retried with backoff, then a clear failure."""
import subprocess
import sys
import time

from tests.integration.conftest import ROOT
from tests.integration.services import free_port


def test_daemon_retries_an_absent_service_then_exits_1_naming_it(env, tmp_path):
    port = free_port()  # nothing listens here
    cfg = env.write_config(tmp_path / "config.yaml", postgres={"port": port, "connect_timeout_s": 1},
                           retry={"max_elapsed_s": 3, "initial_interval_s": 0.2, "max_interval_s": 1})
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "realtime_pipeline.py"), "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert proc.returncode == 1
    assert proc.stderr.count("event=retry operation=postgres_connect") >= 1
    assert "event=start_failed" in proc.stderr and f"cannot reach postgresql://postgres@localhost:{port}/" in proc.stderr
    assert 3 <= took < 30
