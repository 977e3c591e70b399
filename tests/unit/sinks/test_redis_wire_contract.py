"""Contract of the Redis sink's fast path with redis-py and hiredis: the versions it was written for, what it
uses of them, and no redis-py private name outside its module. The round trip against a real server (the raw
path writes what redis-py's plain pipeline writes) is tests/integration/test_redis_wire_roundtrip.py."""
from __future__ import annotations

import ast
import importlib.metadata
import inspect
import re
from pathlib import Path

import hiredis
import pytest
import redis
import redis.connection

from pipeline.sinks import redis_wire

ROOT = Path(__file__).resolve().parents[3]
FENCE = ROOT / "pipeline/sinks/redis_wire.py"
RECHECK = ("pipeline/sinks/redis_wire.py reads redis-py's connection socket (Connection._sock) and parses replies "
           "with hiredis (see its docstring). Before changing the redis or hiredis pin: read redis-py's "
           "connection.py (send_packed_command writes to _sock; get_connection/release; no bytes left buffered in "
           "its parser), fix the module, run this test and tests/integration/test_redis_wire_roundtrip.py and "
           "test_redis_sink.py, then set WRITTEN_FOR and requirements.txt to the new versions. Until then "
           "redis.fast_path: false runs on redis-py's public pipeline only.")


@pytest.mark.parametrize("package", ["redis", "hiredis"])
def test_installed_and_pinned_versions_are_the_ones_the_fast_path_was_written_for(package):
    written_for = redis_wire.WRITTEN_FOR[package]
    installed = importlib.metadata.version(package)
    pins = re.findall(rf"^{package}\s*([=<>!~]=?\s*[^\s#]+.*)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert installed == written_for, f"{package} {installed} is installed, the fast path was written for {written_for}. {RECHECK}"
    assert pins == [f"=={written_for}"], f"requirements.txt must pin {package}=={written_for} exactly, found {pins}. {RECHECK}"


def test_a_connection_keeps_its_socket_in_sock_and_writes_packed_commands_to_it():
    conn = redis.connection.Connection()
    assert hasattr(conn, "_sock") and conn._sock is None, f"redis-py's Connection has no _sock. {RECHECK}"
    source = inspect.getsource(redis.connection.Connection.send_packed_command)
    assert "self._sock.sendall(" in source, f"send_packed_command no longer writes to _sock. {RECHECK}"
    assert list(inspect.signature(redis.connection.Connection.send_packed_command).parameters)[:2] == ["self", "command"]


def test_the_pool_lends_a_connection_without_arguments_and_takes_it_back():
    get = inspect.signature(redis.ConnectionPool.get_connection).parameters
    required = [n for n, p in get.items() if n != "self" and p.default is p.empty
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    assert required == [], f"ConnectionPool.get_connection now requires {required}. {RECHECK}"
    assert list(inspect.signature(redis.ConnectionPool.release).parameters) == ["self", "connection"], RECHECK
    assert callable(getattr(redis.connection.Connection, "disconnect", None)), RECHECK


def test_hiredis_reads_replies_in_bulk_and_returns_a_refusal_as_a_value():
    reader = hiredis.Reader()
    reader.feed(b"$15\r\n1760000000000-0\r\n-WRONGTYPE Operation against a key\r\n:3\r\n:")
    assert reader.gets() == b"1760000000000-0"
    refused = reader.gets()
    assert isinstance(refused, hiredis.ReplyError) and "WRONGTYPE" in str(refused), RECHECK
    assert reader.gets() == 3
    assert reader.gets() is False  # an incomplete reply: wait for more bytes
    reader.feed(b"1\r\n")
    assert reader.gets() == 1


def private_attributes(path: Path) -> set[str]:
    """Attribute names starting with one underscore that a module reads or writes, except on `self`."""
    return {node.attr for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id == "self")}


def test_the_fence_uses_only_connection_sock():
    assert private_attributes(FENCE) == {"_sock"}, "keep redis_wire.py's docstring list of private names exact"


def test_no_other_module_touches_redis_py_private_names():
    client = redis.Redis()
    objects = [redis.Redis, client, redis.ConnectionPool, client.connection_pool, redis.connection.Connection,
               redis.connection.Connection(), redis.client.Pipeline, client.pipeline(transaction=False)]
    names = set()
    for obj in objects:
        names |= set(dir(obj)) | set(getattr(obj, "__dict__", {}))
    redis_private = {n for n in names if n.startswith("_") and not n.startswith("__")}
    offenders = {}
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        if path == FENCE or not re.search(r"^\s*(import redis|from redis)", path.read_text(), re.M):
            continue
        found = private_attributes(path) & redis_private
        if found:
            offenders[str(path.relative_to(ROOT))] = sorted(found)
    assert offenders == {}, f"redis-py's private names outside pipeline/sinks/redis_wire.py: {offenders}"
