"""Server processes the benchmark (and the fault tests) start and stop themselves, on free ports."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def daemon_env() -> dict[str, str]:
    """The daemon's environment: ours, with the allocator setting of deploy/realtime-pipeline.service unless set."""
    return {**os.environ, "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}


class ServiceProcess:
    """A server process we own: start, stop (by signal), freeze (SIGSTOP) and thaw."""

    def __init__(self, name: str, argv: list[str], port: int, workdir: Path):
        self.name, self.argv, self.port, self.workdir = name, argv, port, workdir
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "ServiceProcess":
        log = open(self.workdir / f"{self.name}.log", "ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start on port {self.port}; see {self.workdir}/{self.name}.log")
            time.sleep(0.05)
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


def mosquitto(workdir: Path, port: int | None = None) -> ServiceProcess:
    """A Mosquitto with the settings of deploy/mosquitto.conf, persistence in `workdir`."""
    port = port or free_port()
    data = workdir / "mosquitto-data"
    data.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    # `user root`: started as root, mosquitto would otherwise drop to a user that cannot write here.
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\n"
                    f"persistence_location {data}/\nmax_inflight_messages 1000\nmax_queued_messages 1000000\n"
                    "set_tcp_nodelay true\n")
    return ServiceProcess("mosquitto", [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)], port, workdir)


def mosquitto_limit(port: int, payload: bytes, topic: str, log, messages: int = 200_000) -> float:
    """Mosquitto C client to C client, QoS 0, the same payload size: messages per second."""
    pub, sub = shutil.which("mosquitto_pub"), shutil.which("mosquitto_sub")
    if not pub or not sub:
        log("mosquitto_pub/mosquitto_sub not found (Debian package mosquitto-clients): no broker limit")
        return 0.0
    s = subprocess.Popen([sub, "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", "0", "-C", str(messages)],
                         stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    started = time.monotonic()
    subprocess.run([pub, "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", "0", "-l"],
                   input=(payload + b"\n") * messages, stdout=subprocess.DEVNULL, timeout=120)
    try:
        s.wait(60)
    except subprocess.TimeoutExpired:
        s.kill()
        log("mosquitto_sub did not receive every message (QoS 0 drops under overload)")
    return messages / (time.monotonic() - started)
