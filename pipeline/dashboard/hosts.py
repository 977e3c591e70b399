"""The Host header check: a defence against DNS rebinding, where a foreign page gets a browser to read the
dashboard through a name of the attacker's that now points at this machine. Such a request still carries the
attacker's name in Host, so only names this dashboard knows itself by are answered.

An IP address in Host is always accepted: rebinding needs a name, and a page loaded from an address can only
be the dashboard's own. A request without Host (HTTP/1.0 probes) is accepted too: no browser sends one.
"""
from __future__ import annotations

import ipaddress
import socket

from ..config import DashboardConfig

ANY_HOST = "*"
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


def normalize(name: str) -> str:
    """A host name as compared: lower case, without brackets, port or the root's trailing dot."""
    name = name.strip().lower()
    if name.startswith("["):  # [::1] or [::1]:8080
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:  # name:port (an IPv6 address without brackets has several colons)
        name = name.partition(":")[0]
    return name.rstrip(".")


def allowed_names(cfg: DashboardConfig, hostname: str | None = None) -> frozenset[str] | None:
    """The names Host may carry for `cfg`, or None when dashboard.allowed_hosts turns the check off ("*")."""
    if ANY_HOST in cfg.allowed_hosts:
        return None
    hostname = socket.gethostname() if hostname is None else hostname
    names = {*LOCAL_NAMES, cfg.host, hostname, hostname.partition(".")[0], *cfg.allowed_hosts}
    return frozenset(normalize(n) for n in names if n)


def is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(header: str | None, names: frozenset[str] | None) -> bool:
    """Whether a request with this Host header (None: none sent) may be answered."""
    if names is None or header is None:
        return True
    name = normalize(header)
    return name in names or is_ip_address(name)
