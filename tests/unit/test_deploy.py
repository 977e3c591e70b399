"""The systemd units: `systemd-analyze verify` accepts them and they keep the settings operations rely on."""
import configparser
import re
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


AGENT_ENV = {"MQTT_HOST", "MQTT_PORT", "MQTT_USERNAME", "MQTT_PASSWORD", "MQTT_CA_FILE"}


def env_file(path: Path) -> dict[str, str]:
    """KEY=value lines of an EnvironmentFile (comments and blank lines skipped)."""
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def agent_argv(env: dict[str, str]) -> list[str]:
    """The agent unit's ExecStart after the program, ${VAR} replaced as systemd does: unit Environment=, then the file."""
    svc = _unit(UNITS[1])["Service"]
    values = dict(item.split("=", 1) for item in svc["Environment"].split())
    values.update(env)
    argv = svc["ExecStart"].split()
    assert argv[:3] == [f"{INSTALL_DIR}/.venv/bin/python", "-m", "pipeline.agents.system"]
    return [re.sub(r"\$\{(\w+)\}", lambda m: values.get(m.group(1), ""), a) for a in argv[3:]]


def test_agent_unit_runs_the_agent_module_over_tls_with_a_login_and_its_own_environment():
    from pipeline.agents.system import parse_args

    svc = _unit(UNITS[1])["Service"]
    assert svc["Restart"] == "on-failure"
    # Its own file, not the daemon's .env, and a user of its own that cannot read that .env either.
    assert svc["EnvironmentFile"] == "/etc/realtime-pipeline/agent.env"
    assert svc["DynamicUser"] == "yes" and "User" not in svc
    assert svc["InaccessiblePaths"] == f"-{INSTALL_DIR}/.env"
    example = env_file(ROOT / "deploy" / "agent.env.example")
    assert set(example) == AGENT_ENV  # the MQTT login only: no other secret of the pipeline
    from pipeline.config.secret import SECRET_ENV
    assert set(SECRET_ENV.values()) & set(example) == {"MQTT_PASSWORD"}
    args = parse_args(agent_argv({**example, "MQTT_USERNAME": "host-7"}))
    assert args.tls and not args.insecure and args.mqtt_port == 8883
    assert args.mqtt_username == "host-7" and args.host == "host-7"  # the ACL: system/<user name>
    assert args.ca_file == example["MQTT_CA_FILE"]


@pytest.mark.parametrize("name", UNITS)
def test_units_bound_memory_and_tasks(name):
    svc = _unit(name)["Service"]
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    memory_max = int(svc["MemoryMax"][:-1]) * units[svc["MemoryMax"][-1]]
    assert 64 << 20 <= memory_max <= 8 << 30
    if "MemoryHigh" in svc:
        assert int(svc["MemoryHigh"][:-1]) * units[svc["MemoryHigh"][-1]] < memory_max
    assert 8 <= int(svc["TasksMax"]) <= 1024


def test_units_give_the_spools_a_state_directory(monkeypatch):
    # ProtectSystem=strict leaves no other place to write: the spools' default must be the unit's StateDirectory.
    dirs = {unit: _unit(unit)["Service"]["StateDirectory"] for unit in UNITS}
    # Each its own: the agent runs as a DynamicUser, whose state directory systemd keeps under /var/lib/private.
    assert dirs == {"realtime-pipeline.service": "realtime-pipeline",
                    "realtime-pipeline-agent.service": "realtime-pipeline-agent"}
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


def test_mosquitto_listens_in_the_clear_on_loopback_only_and_over_tls_everywhere():
    lines = [line.split(None, 1) for line in (ROOT / "deploy" / "mosquitto.conf").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    listeners = [i for i, (name, _) in enumerate(lines) if name == "listener"]
    assert [lines[i][1] for i in listeners] == ["1883 127.0.0.1", "8883"]
    tls = dict(lines[listeners[1] + 1:])  # the options after the TLS listener
    assert {"certfile", "keyfile", "cafile"} <= set(tls) and tls["tls_version"] == "tlsv1.2"
    assert "per_listener_settings" not in dict(lines)  # logins and the ACL apply to both listeners


def test_mosquitto_queues_are_bounded_in_bytes_and_retain_is_off():
    opts = _mosquitto_options()
    queued, queued_bytes = int(opts["max_queued_messages"]), int(opts["max_queued_bytes"])
    assert 1000 < queued <= 1_000_000 and 0 < queued_bytes <= 1 << 30  # 0 would be unlimited
    # The byte bound is what holds when messages are large: by count alone a session could take this much.
    assert queued * int(opts["message_size_limit"]) > 100 * queued_bytes
    assert opts["retain_available"] == "false"


def daemon_argv(env: dict[str, str]) -> list[str]:
    """The daemon unit's ExecStart after the script, $VAR replaced as systemd does (split at spaces; unit
    Environment= first, then EnvironmentFile= lines, which win)."""
    svc = _unit(UNITS[0])["Service"]
    values = dict(item.split("=", 1) for item in svc["Environment"].split())
    values.update(env)
    argv = svc["ExecStart"].split()
    assert argv[:2] == [f"{INSTALL_DIR}/.venv/bin/python", f"{INSTALL_DIR}/realtime_pipeline.py"]
    out = []
    for a in argv[2:]:
        out += values.get(a[1:], "").split() if a.startswith("$") else [a]
    return [a.replace(INSTALL_DIR, str(ROOT)) for a in out]


def test_daemon_unit_adds_recipes_as_more_config_files_from_its_environment():
    import realtime_pipeline
    from pipeline.config import recipes

    assert realtime_pipeline.parse_args(daemon_argv({})).config == [str(ROOT / "config.yaml")]  # none by default
    line = f"--config {INSTALL_DIR}/deploy/formats/tasmota.yaml --config {INSTALL_DIR}/deploy/formats/shelly.yaml"
    args = realtime_pipeline.parse_args(daemon_argv({"RECIPES": line}))
    assert args.config == [str(ROOT / "config.yaml"), str(recipes.path("tasmota")), str(recipes.path("shelly"))]
    settings = c.load(args.config, env={})
    assert [s.name for s in settings.config.sources] == ["tasmota", "shelly"]
    # The pre-start check validates the same files.
    pre = _unit(UNITS[0])["Service"]["ExecStartPre"]
    assert pre.replace(" --check-config", "") == _unit(UNITS[0])["Service"]["ExecStart"]
