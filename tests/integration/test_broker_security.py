"""deploy/mosquitto.conf and deploy/mosquitto.acl in a real Mosquitto (free ports, files in tmp, a throwaway CA
made by openssl): devices log in with a password made by mosquitto_passwd and publish only under their own id,
the daemon's user reads everything and $SYS, anonymous clients are refused, payloads over message_size_limit go
nowhere, the TLS listener takes logins over TLS only, the plain one answers on loopback only, and a retained
publish is refused. And the copy `make services` runs (scripts/services.sh) still takes anonymous clients and
retained messages, with no size limit."""
from __future__ import annotations

import re
import shutil
import socket
import os
import ssl
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.integration.services import ServiceProcess, free_port
from tests.integration.test_mqtt_tls import make_certificates
from tests.unit.test_deploy import agent_argv, env_file

ROOT = Path(__file__).resolve().parents[2]
DAEMON = "realtime-pipeline"
PASSWORDS = {"dev-1": "pw-one", "dev-2": "pw-two", DAEMON: "pw-daemon", "host-1": "pw-host"}

pytestmark = [pytest.mark.skipif(not shutil.which("mosquitto_passwd"), reason="mosquitto_passwd missing (Debian package mosquitto)"),
              pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl command")]


def option(conf: str, name: str) -> str:
    [value] = re.findall(rf"^{name}[ \t]+(.+)$", conf, re.M)
    return value.strip()


def start_broker(workdir: Path, conf: str) -> ServiceProcess:
    # Started as root, Mosquitto would switch to a user that cannot read these files.
    (workdir / "mosquitto.conf").write_text(conf + "\nuser root\n")
    return ServiceProcess("mosquitto", [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(workdir / "mosquitto.conf")],
                          int(re.search(r"^listener (\d+)", conf, re.M).group(1)), workdir).start()


class SecureBroker:
    """Where the test broker listens: `port` (plain, loopback), `tls_port` (TLS); `ca` verifies its certificate."""

    def __init__(self, port: int, tls_port: int, size_limit: int, ca: str):
        self.port, self.tls_port, self.size_limit, self.ca = port, tls_port, size_limit, ca

    def __iter__(self):  # port, size limit: what the older tests unpack
        return iter((self.port, self.size_limit))


@pytest.fixture
def secure_broker(tmp_path):
    """deploy/mosquitto.conf with its listeners moved to free ports on localhost and its files in tmp_path."""
    conf = (ROOT / "deploy/mosquitto.conf").read_text()
    assert option(conf, "allow_anonymous") == "false"
    assert re.findall(r"^listener (.+)$", conf, re.M) == ["1883 127.0.0.1", "8883"]
    certs = make_certificates(tmp_path)
    passwd, acl = tmp_path / "pipeline.passwd", tmp_path / "pipeline.acl"
    for i, (user, password) in enumerate(PASSWORDS.items()):
        subprocess.run(["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", str(passwd), user, password], check=True,
                       capture_output=True, timeout=10)
    shutil.copy(ROOT / "deploy/mosquitto.acl", acl)
    port, tls_port = free_port(), free_port()
    conf = re.sub(r"^listener 1883 127.0.0.1$", f"listener {port} 127.0.0.1", conf, count=1, flags=re.M)
    conf = re.sub(r"^listener 8883$", f"listener {tls_port} 127.0.0.1", conf, count=1, flags=re.M)
    for name, path in (("certfile", tmp_path / "server.pem"), ("keyfile", tmp_path / "server.key"),
                       ("cafile", certs["ca.pem"]), ("password_file", passwd), ("acl_file", acl)):
        conf = conf.replace(f"{name} {option(conf, name)}", f"{name} {path}")
    conf = conf.replace("sys_interval 10", "sys_interval 1")  # $SYS is not replayed (retain off): published soon
    broker = start_broker(tmp_path, conf)
    yield SecureBroker(broker.port, tls_port, int(option(conf, "message_size_limit")), certs["ca.pem"])
    broker.stop()


class Client:
    """A paho client that connects (or records the refusal) and collects the messages of its subscriptions."""

    def __init__(self, port: int, user: str | None = None, password: str | None = None, ca: str | None = None):
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sec-{uuid.uuid4().hex[:8]}")
        if user:
            self.client.username_pw_set(user, password)
        if ca:
            self.client.tls_set(ca_certs=ca)
        self.disconnected = threading.Event()
        self.client.on_disconnect = lambda *_a: self.disconnected.set()
        self.messages: list[tuple[str, bytes]] = []
        self.arrived = threading.Condition()
        self.connack = threading.Event()
        self.refused = None
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.connack.wait(10), "no CONNACK"

    def _on_connect(self, _c, _u, _f, reason_code, _p):
        self.refused = reason_code if reason_code.is_failure else None
        self.connack.set()

    def _on_message(self, _c, _u, message):
        with self.arrived:
            self.messages.append((message.topic, message.payload))
            self.arrived.notify_all()

    def subscribe(self, *filters: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_a: done.set()
        self.client.subscribe([(f, 1) for f in filters])
        assert done.wait(10), "no SUBACK"

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def wait_topic(self, topic: str, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        """Everything received until a message on `topic` arrived (each publisher's messages come in order)."""
        with self.arrived:
            assert self.arrived.wait_for(lambda: any(t == topic for t, _ in self.messages), timeout), \
                f"nothing on {topic}; got {[t for t, _ in self.messages]}"
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_devices_publish_only_under_their_own_id_and_the_daemon_reads_everything(secure_broker):
    port, size_limit = secure_broker
    daemon = Client(port, DAEMON, PASSWORDS[DAEMON])
    dev1 = Client(port, "dev-1", PASSWORDS["dev-1"])
    try:
        assert daemon.refused is None and dev1.refused is None
        daemon.subscribe("sensors/#", "system/#", "logs/#", "$SYS/broker/uptime")
        assert daemon.wait_topic("$SYS/broker/uptime")  # the broker's own topics: the daemon's user reads $SYS
        dev1.publish("sensors/dev-1", b'{"metric": "temperature", "value": 21.5}')
        dev1.publish("sensors/dev-1/humidity", b"40")
        dev1.publish("sensors/dev-2", b'{"metric": "temperature", "value": -99}')  # another device's id
        dev1.publish("sensors/dev-2/humidity", b"0")
        dev1.publish("logs/dev-2", b'{"level": "ERROR", "message": "forged"}')
        dev1.publish("sensors/dev-1", b"x" * (size_limit + 1))  # over message_size_limit
        dev1.publish("sensors/dev-1", b"y" * (size_limit - 1024))
        dev1.publish("sensors/dev-1/end", b"1")  # the last: when it is here, everything before it that will come has
        got = [(t, len(p)) for t, p in daemon.wait_topic("sensors/dev-1/end") if not t.startswith("$SYS")]
    finally:
        daemon.close()
        dev1.close()
    assert got == [("sensors/dev-1", 40), ("sensors/dev-1/humidity", 2), ("sensors/dev-1", size_limit - 1024),
                   ("sensors/dev-1/end", 1)]


def test_anonymous_clients_and_wrong_passwords_are_refused(secure_broker):
    port, _ = secure_broker
    anonymous = Client(port)
    wrong = Client(port, "dev-1", "not-the-password")
    try:
        assert anonymous.refused is not None and str(anonymous.refused) == "Not authorized"
        assert wrong.refused is not None and str(wrong.refused) == "Not authorized"
    finally:
        anonymous.close()
        wrong.close()


def test_the_broker_make_services_runs_takes_anonymous_clients_any_size_and_retained_messages(tmp_path):
    conf = subprocess.run(["bash", str(ROOT / "scripts/services.sh"), "dev-mosquitto-conf"], capture_output=True, text=True,
                          check=True, timeout=10).stdout
    deploy = (ROOT / "deploy/mosquitto.conf").read_text()
    for name in ("max_queued_messages", "max_queued_bytes", "max_inflight_messages"):  # the deploy settings are kept
        assert option(conf, name) == option(deploy, name)
    assert re.findall(r"^listener .+$", conf, re.M) == ["listener 1883 127.0.0.1"]  # no TLS files needed
    port = free_port()
    broker = start_broker(tmp_path, conf.replace("listener 1883 127.0.0.1", f"listener {port} 127.0.0.1"))
    sub, pub = Client(port), Client(port)
    try:
        assert sub.refused is None and pub.refused is None
        sub.subscribe("sensors/#")
        pub.publish("sensors/anyone", b"z" * (1024 * 1024))
        assert [(t, len(p)) for t, p in sub.wait_topic("sensors/anyone")] == [("sensors/anyone", 1024 * 1024)]
        pub.client.publish("sensors/kept", b"1", qos=1, retain=True).wait_for_publish(10)  # tests/integration/test_retained.py
        late = Client(port)
        late.subscribe("sensors/kept")
        assert late.wait_topic("sensors/kept") == [("sensors/kept", b"1")]
        late.close()
    finally:
        sub.close()
        pub.close()
        broker.stop()


def test_the_tls_listener_takes_logins_over_tls_only(secure_broker):
    b = secure_broker
    daemon = Client(b.tls_port, DAEMON, PASSWORDS[DAEMON], ca=b.ca)
    dev1 = Client(b.tls_port, "dev-1", PASSWORDS["dev-1"], ca=b.ca)
    try:
        assert daemon.refused is None and dev1.refused is None
        daemon.subscribe("sensors/#")
        dev1.publish("sensors/dev-1", b"21.5")
        assert daemon.wait_topic("sensors/dev-1") == [("sensors/dev-1", b"21.5")]
    finally:
        daemon.close()
        dev1.close()
    anonymous = Client(b.tls_port, ca=b.ca)
    try:
        assert str(anonymous.refused) == "Not authorized"  # TLS alone is no login
    finally:
        anonymous.close()
    # Plain MQTT on the TLS port: the broker wants a TLS handshake and closes the connection, no CONNACK; the
    # plain port answers the same bytes (refusing the anonymous login).
    assert plain_connect(b.port)[:2] == b"\x20\x02"
    assert plain_connect(b.tls_port) == b""
    # The server's certificate is only trusted with the CA it was given (verification on, as in mqtt.tls).
    ctx = ssl.create_default_context()  # the system's CAs: they did not sign the test server's certificate
    with pytest.raises(ssl.SSLCertVerificationError):
        with socket.create_connection(("127.0.0.1", b.tls_port), timeout=10) as raw:
            ctx.wrap_socket(raw, server_hostname="localhost")


def plain_connect(port: int) -> bytes:
    """An MQTT 3.1.1 CONNECT (client id x, no login) in the clear; what comes back (b"" if the connection closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01x")
        try:
            return s.recv(16)
        except ConnectionResetError:
            return b""


def outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if it has one beyond loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_the_plain_listener_answers_on_loopback_only(secure_broker):
    address = outward_address()
    if address is None:
        pytest.skip("no address beyond loopback on this machine")
    with pytest.raises(OSError):
        socket.create_connection((address, secure_broker.port), timeout=5).close()
    socket.create_connection(("127.0.0.1", secure_broker.port), timeout=5).close()


def test_a_retained_publish_is_refused_and_nothing_is_kept(secure_broker):
    b = secure_broker
    dev1 = Client(b.port, "dev-1", PASSWORDS["dev-1"])
    try:
        dev1.client.publish("sensors/dev-1/deep/er/still", b"666", qos=1, retain=True)
        assert dev1.disconnected.wait(10), "a retained publish was accepted"  # MQTT 3.1.1: disconnected
    finally:
        dev1.close()
    dev1 = Client(b.port, "dev-1", PASSWORDS["dev-1"])
    daemon = Client(b.port, DAEMON, PASSWORDS[DAEMON])
    try:
        daemon.subscribe("sensors/#")
        dev1.publish("sensors/dev-1", b"20")  # the same device, live and not retained: delivered
        assert daemon.wait_topic("sensors/dev-1") == [("sensors/dev-1", b"20")]  # no stored copy came first
    finally:
        dev1.close()
        daemon.close()


def test_the_agent_as_its_unit_runs_it_publishes_over_tls_under_its_login(secure_broker):
    b = secure_broker
    env = {**env_file(ROOT / "deploy/agent.env.example"), "MQTT_HOST": "127.0.0.1", "MQTT_PORT": str(b.tls_port),
           "MQTT_USERNAME": "host-1", "MQTT_CA_FILE": b.ca}
    daemon = Client(b.tls_port, DAEMON, PASSWORDS[DAEMON], ca=b.ca)
    try:
        daemon.subscribe("system/#")
        run = subprocess.run([sys.executable, "-m", "pipeline.agents.system", *agent_argv(env), "--interval", "0.2",
                              "--count", "2"], capture_output=True, text=True, timeout=60, cwd=ROOT,
                             env={**os.environ, "MQTT_PASSWORD": PASSWORDS["host-1"]})
        assert run.returncode == 0 and "published=2 dropped=0 unacknowledged=0" in run.stderr, run.stderr
        assert "tls=True" in run.stderr
        got = daemon.wait_topic("system/host-1")
    finally:
        daemon.close()
    assert {t for t, _ in got} == {"system/host-1"}
