"""deploy/mosquitto.conf and deploy/mosquitto.acl in a real Mosquitto (on a free port, files in tmp): devices log
in with a password made by mosquitto_passwd and publish only under their own id, the daemon's user reads
everything and $SYS, anonymous clients are refused, payloads over message_size_limit go nowhere. And the copy
`make services` runs (scripts/services.sh) still takes anonymous clients, with no size limit."""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.integration.services import ServiceProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
DAEMON = "realtime-pipeline"
PASSWORDS = {"dev-1": "pw-one", "dev-2": "pw-two", DAEMON: "pw-daemon"}

pytestmark = pytest.mark.skipif(not shutil.which("mosquitto_passwd"), reason="mosquitto_passwd missing (Debian package mosquitto)")


def option(conf: str, name: str) -> str:
    [value] = re.findall(rf"^{name}[ \t]+(.+)$", conf, re.M)
    return value.strip()


def start_broker(workdir: Path, conf: str) -> ServiceProcess:
    # Started as root, Mosquitto would switch to a user that cannot read these files.
    (workdir / "mosquitto.conf").write_text(conf + "\nuser root\n")
    return ServiceProcess("mosquitto", [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(workdir / "mosquitto.conf")],
                          int(re.search(r"^listener (\d+)", conf, re.M).group(1)), workdir).start()


@pytest.fixture
def secure_broker(tmp_path):
    """deploy/mosquitto.conf with its listener moved to a free port on localhost and its files in tmp_path."""
    conf = (ROOT / "deploy/mosquitto.conf").read_text()
    assert option(conf, "allow_anonymous") == "false"
    passwd, acl = tmp_path / "pipeline.passwd", tmp_path / "pipeline.acl"
    for i, (user, password) in enumerate(PASSWORDS.items()):
        subprocess.run(["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", str(passwd), user, password], check=True,
                       capture_output=True, timeout=10)
    shutil.copy(ROOT / "deploy/mosquitto.acl", acl)
    port = free_port()
    conf = re.sub(r"^listener 1883$", f"listener {port} 127.0.0.1", conf, count=1, flags=re.M)
    conf = conf.replace(f"password_file {option(conf, 'password_file')}", f"password_file {passwd}")
    conf = conf.replace(f"acl_file {option(conf, 'acl_file')}", f"acl_file {acl}")
    broker = start_broker(tmp_path, conf)
    yield broker.port, int(option(conf, "message_size_limit"))
    broker.stop()


class Client:
    """A paho client that connects (or records the refusal) and collects the messages of its subscriptions."""

    def __init__(self, port: int, user: str | None = None, password: str | None = None):
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sec-{uuid.uuid4().hex[:8]}")
        if user:
            self.client.username_pw_set(user, password)
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
        daemon.subscribe("sensors/#", "system/#", "logs/#", "$SYS/broker/version")
        assert daemon.wait_topic("$SYS/broker/version")  # the broker's own topics: the daemon's user reads $SYS
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


def test_the_broker_make_services_runs_takes_anonymous_clients_and_any_size(tmp_path):
    conf = subprocess.run(["bash", str(ROOT / "scripts/services.sh"), "dev-mosquitto-conf"], capture_output=True, text=True,
                          check=True, timeout=10).stdout
    assert "max_queued_messages 1000000" in conf  # the deploy settings are kept
    port = free_port()
    broker = start_broker(tmp_path, conf.replace("listener 1883 127.0.0.1", f"listener {port} 127.0.0.1"))
    sub, pub = Client(port), Client(port)
    try:
        assert sub.refused is None and pub.refused is None
        sub.subscribe("sensors/#")
        pub.publish("sensors/anyone", b"z" * (1024 * 1024))
        assert [(t, len(p)) for t, p in sub.wait_topic("sensors/anyone")] == [("sensors/anyone", 1024 * 1024)]
    finally:
        sub.close()
        pub.close()
        broker.stop()
