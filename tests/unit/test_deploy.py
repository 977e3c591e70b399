"""The systemd units: `systemd-analyze verify` accepts them and they keep the settings operations rely on."""
import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline import config as c
from pipeline.agents.spool import spool_path

ROOT = Path(__file__).resolve().parents[2]
UNITS = ["realtime-pipeline.service", "realtime-pipeline-agent.service"]
INSTALL_DIR = "/opt/realtime-pipeline"

needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze missing: run scripts/ensure-test-tools.sh")


def _unit(name: str) -> configparser.ConfigParser:
    p = configparser.ConfigParser(strict=False, interpolation=None)
    p.optionxform = str
    p.read(ROOT / "deploy" / name)
    return p


def _verify(tmp_path: Path, texts: dict[str, str]) -> subprocess.CompletedProcess:
    """Verify units rewritten to a temporary install dir whose venv python exists (verify checks ExecStart)."""
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(shutil.which("python3") or "/usr/bin/python3")
    (tmp_path / "realtime_pipeline.py").touch()
    paths = []
    for name, text in texts.items():
        (tmp_path / name).write_text(text.replace(INSTALL_DIR, str(tmp_path)))
        paths.append(str(tmp_path / name))
    return subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True, timeout=60)


@needs_systemd
def test_units_pass_systemd_analyze_verify(tmp_path):
    proc = _verify(tmp_path, {n: (ROOT / "deploy" / n).read_text() for n in UNITS})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""  # no warnings either


@needs_systemd
def test_verify_catches_a_broken_unit(tmp_path):
    text = (ROOT / "deploy" / UNITS[0]).read_text().replace("Restart=on-failure", "Restart=sometimes")
    proc = _verify(tmp_path, {UNITS[0]: text})
    assert "restart specifier" in proc.stderr  # a warning only: hence the empty-stderr check above


def test_daemon_unit_settings():
    svc = _unit(UNITS[0])["Service"]
    assert svc["ExecStart"].startswith(f"{INSTALL_DIR}/.venv/bin/python ")
    assert svc["EnvironmentFile"] == f"-{INSTALL_DIR}/.env"
    assert svc["Restart"] == "on-failure"
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    # systemd must not SIGKILL the daemon while it still drains within its own bound.
    shutdown = c.load(ROOT / "config.yaml", env={}).config.processing.shutdown_timeout_s
    assert int(svc["TimeoutStopSec"]) > shutdown
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert svc[key] == "yes"
    assert svc["ProtectSystem"] == "strict"


def test_agent_unit_runs_the_agent_module():
    svc = _unit(UNITS[1])["Service"]
    assert svc["ExecStart"] == f"{INSTALL_DIR}/.venv/bin/python -m pipeline.agents.system"
    assert svc["Restart"] == "on-failure"


def test_units_give_the_spools_a_state_directory(monkeypatch):
    # ProtectSystem=strict leaves no other place to write: the spools' default must be the unit's StateDirectory.
    for unit in UNITS:
        svc = _unit(unit)["Service"]
        assert svc["StateDirectory"] == "realtime-pipeline", unit
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/realtime-pipeline")
    assert spool_path("", "system-agent.db") == "/var/lib/realtime-pipeline/system-agent.db"
    assert spool_path("/data/s.db", "system-agent.db") == "/data/s.db"


def _mosquitto_options() -> dict[str, str]:
    lines = (ROOT / "deploy" / "mosquitto.conf").read_text().splitlines()
    return dict(line.split(None, 1) for line in lines if line.strip() and not line.startswith("#"))


def test_mosquitto_size_limit_fits_the_daemons_packet_limit_and_logins_are_required():
    from pipeline.config.checks import PUBLISH_OVERHEAD_BYTES

    opts = _mosquitto_options()
    cfg = c.load(ROOT / "config.yaml", env={}).config
    limit = int(opts["message_size_limit"])
    # What the broker passes fits the daemon's packet limit with its topic, and it passes what validation accepts.
    assert cfg.validation.max_payload_bytes < limit <= cfg.mqtt.max_packet_bytes - PUBLISH_OVERHEAD_BYTES
    assert opts["allow_anonymous"] == "false"
    assert opts["password_file"] and opts["acl_file"] == "/etc/mosquitto/pipeline.acl"
    acl = (ROOT / "deploy" / "mosquitto.acl").read_text()
    for root in ("sensors", cfg.agents.system.topic_root, cfg.logs.topic_root):
        assert f"pattern write {root}/%u/#" in acl
    assert "user realtime-pipeline\ntopic read #\ntopic read $SYS/#\n" in acl  # the daemon: mqtt.username
