"""The waitress fence (pipeline/dashboard/http_server.py): written against one waitress version, and a bind
failure names the keys that chose the address. Its limits are tested on real sockets in
tests/integration/test_dashboard_serving.py."""
from __future__ import annotations

import re
import socket
from importlib.metadata import version
from pathlib import Path

import pytest

from pipeline.dashboard import http_server

ROOT = Path(__file__).resolve().parents[3]


def test_waitress_is_the_pinned_version_the_server_loop_was_written_against():
    # http_server.py runs waitress's poll loop itself and counts its own sockets in the map (OWN_SOCKETS):
    # another version must be checked against those internals before the pin moves.
    pinned = re.search(r"^waitress==(\S+)", (ROOT / "requirements.txt").read_text(), re.M)
    assert pinned and pinned.group(1) == "3.0.2" == version("waitress")


def test_a_taken_port_names_the_keys():
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        with pytest.raises(OSError, match=r"dashboard cannot listen on 127.0.0.1:\d+ \(dashboard.host, dashboard.port\)"):
            http_server.listen("127.0.0.1", blocker.getsockname()[1])
    finally:
        blocker.close()


def test_an_unresolvable_host_names_the_keys():
    with pytest.raises(OSError, match=r"dashboard cannot listen on no-such-host.invalid:0 \(dashboard.host"):
        http_server.listen("no-such-host.invalid", 0)


def test_ipv6_loopback_listens():
    try:
        sock = http_server.listen("::1", 0)
    except OSError as err:
        pytest.skip(f"no IPv6 loopback here: {err}")
    assert sock.family == socket.AF_INET6
    sock.close()
