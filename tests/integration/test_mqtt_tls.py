"""The host agent (command and daemon thread) and the log handler over TLS: against a Mosquitto of the test's own
whose listeners accept TLS only (one of them also a client certificate), with a throwaway CA made by `openssl`.
Over TLS their messages arrive; without the TLS settings they cannot connect."""
from __future__ import annotations

import json
import logging
import shutil
import ssl
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.agents.spool import state_dir as spool_state_dir
from pipeline.logship import MQTTHandler
from tests.integration.clients import RunningPipeline, wait_for
from tests.integration.conftest import ROOT
from tests.integration.services import ServiceProcess, free_port

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl command")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(d: Path) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by the CA."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test-ca",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        (d / f"{name}.ext").write_text(f"subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                                       f"keyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n"
                                       "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return {name: str(d / name) for name in ("ca.pem", "client.pem", "client.key")}


class TlsBroker:
    """Mosquitto with two TLS-only listeners: `port` (server certificate) and `cert_port` (a client certificate too)."""

    def __init__(self, workdir: Path):
        self.files = make_certificates(workdir)
        self.ca = self.files["ca.pem"]
        self.port, self.cert_port = free_port(), free_port()
        server = f"cafile {self.ca}\ncertfile {workdir}/server.pem\nkeyfile {workdir}/server.key\n"
        conf = workdir / "mosquitto-tls.conf"
        conf.write_text(f"per_listener_settings false\nallow_anonymous true\nuser root\n"
                        f"listener {self.port} 127.0.0.1\n{server}"
                        f"listener {self.cert_port} 127.0.0.1\n{server}require_certificate true\n")
        self.proc = ServiceProcess("mosquitto-tls", [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                                   self.port, workdir)

    def subscribe(self, topic_filter: str) -> "Received":
        """A plain paho client of the test's own, over TLS, collecting what arrives on `topic_filter`."""
        return Received(self, topic_filter)


class Received:
    def __init__(self, broker: TlsBroker, topic_filter: str):
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")
        self.client.tls_set(ca_certs=broker.ca, cert_reqs=ssl.CERT_REQUIRED)
        self.client.on_connect = lambda c, *_: c.subscribe(topic_filter, qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = lambda _c, _u, m: self._add(m.topic, m.payload)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert subscribed.wait(10), "the test's subscriber could not subscribe over TLS"

    def _add(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self.messages.append((topic, payload))

    def count(self) -> int:
        with self._lock:
            return len(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path):
    b = TlsBroker(tmp_path)
    b.proc.start()
    yield b
    b.proc.stop()


def agent(*args: str, count: int = 2) -> subprocess.CompletedProcess:
    # A spool of its own: what one refused run keeps for its next start is not the next run's business.
    spool = f"{spool_state_dir()}/agent-{uuid.uuid4().hex[:8]}.db"
    return subprocess.run([sys.executable, "-m", "pipeline.agents.system", "--interval", "0.2", "--count", str(count),
                           "--mqtt-host", "127.0.0.1", "--spool", spool, *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


@pytest.mark.faults  # runs for tens of seconds: the faults tier (make test), not make test-fast
def test_agent_command_over_tls(broker):
    root = f"tls{uuid.uuid4().hex[:8]}"
    got = broker.subscribe(f"{root}/#")
    try:
        ok = agent("--mqtt-port", str(broker.port), "--topic-root", root, "--host", "h1", "--tls", "--ca-file", broker.ca)
        assert ok.returncode == 0, ok.stderr
        assert "published=2 dropped=0 unacknowledged=0" in ok.stderr
        with_cert = agent("--mqtt-port", str(broker.cert_port), "--topic-root", root, "--host", "h2", "--tls",
                          "--ca-file", broker.ca, "--cert-file", broker.files["client.pem"],
                          "--key-file", broker.files["client.key"])
        assert with_cert.returncode == 0, with_cert.stderr
        wait_for(lambda: got.count() == 4, what="4 messages over TLS")
        # The same broker without the TLS settings: no connection, the message stays unacknowledged.
        plain = agent("--mqtt-port", str(broker.port), "--topic-root", root, "--host", "h3", count=1)
        no_cert = agent("--mqtt-port", str(broker.cert_port), "--topic-root", root, "--host", "h4", "--tls",
                        "--ca-file", broker.ca, count=1)
        # Verification is on: a broker whose certificate is not signed by the given CA is refused.
        wrong_ca = agent("--mqtt-port", str(broker.port), "--topic-root", root, "--host", "h5", "--tls",
                         "--ca-file", broker.files["client.pem"], count=1)
    finally:
        got.close()
    for refused in (plain, no_cert, wrong_ca):
        assert refused.returncode == 1 and "published=1 dropped=0 unacknowledged=1" in refused.stderr, refused.stderr
    assert sorted({t for t, _ in got.messages}) == [f"{root}/h1", f"{root}/h2"]
    assert all(json.loads(p)["type"] == "system" for _, p in got.messages)


def test_agent_command_refuses_tls_files_without_tls():
    proc = subprocess.run([sys.executable, "-m", "pipeline.agents.system", "--ca-file", "/etc/ssl/ca.pem"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2 and "--ca-file: needs --tls" in proc.stderr


def ship(port: int, root: str, app: str, **tls) -> MQTTHandler:
    handler = MQTTHandler(app, "127.0.0.1", port, topic_root=root, close_timeout=5, **tls)
    logger = logging.getLogger(f"test.tls.{app}")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.error("payment failed over %s", app)
        handler.flush(5)
    finally:
        logger.removeHandler(handler)
        handler.close()
    return handler


@pytest.mark.long
def test_log_handler_over_tls(broker):
    root = f"ltls{uuid.uuid4().hex[:8]}"
    got = broker.subscribe(f"{root}/#")
    try:
        server_only = ship(broker.port, root, "billing", tls=True, ca_file=broker.ca)
        with_cert = ship(broker.cert_port, root, "shop", tls=True, ca_file=broker.ca,
                         cert_file=broker.files["client.pem"], key_file=broker.files["client.key"])
        wait_for(lambda: got.count() == 2, what="2 log records over TLS")
        plain = ship(broker.port, root, "plain")
    finally:
        got.close()
    assert server_only.sent == 1 and with_cert.sent == 1
    assert plain.sent == 0 and plain.unconfirmed + plain.dropped == 1
    records = {t: json.loads(p) for t, p in got.messages}
    assert set(records) == {f"{root}/billing", f"{root}/shop"}
    assert records[f"{root}/billing"]["message"] == "payment failed over billing"


def test_daemon_runs_agent_and_ships_its_logs_over_tls(env, broker):
    """agents.system and logs.ship_own use the bridge's broker settings, mqtt.tls included."""
    host, app, logs_root = f"tls-{env.run_id}", f"rp-{env.run_id}", f"l{env.run_id}"
    settings = env.migrate(env.settings(
        mqtt={"host": "127.0.0.1", "port": broker.port, "tls": {"enabled": True, "ca_file": broker.ca},
              "topics": [f"{env.root}/#", f"{logs_root}/#"]},
        agents={"system": {"enabled": True, "interval_s": 0.5, "host": host, "topic_root": env.root}},
        logs={"topic_root": logs_root, "ship_own": True, "ship_app": app}))
    source = logging.getLogger(f"pipeline.test_tls_{env.run_id}")
    with RunningPipeline(settings, env.metrics()):
        wait_for(lambda: env.query("SELECT count(*) FROM measurements WHERE sensor_id = %s AND metric = 'cpu_percent'",
                                   (host,))[0][0] >= 2, what="2 samples of the daemon's agent over TLS")
        source.warning("event=tls_shipped")
        wait_for(lambda: env.query("SELECT 1 FROM logs WHERE app = %s AND message = 'event=tls_shipped'", (app,)),
                 what="the daemon's warning shipped over TLS")
