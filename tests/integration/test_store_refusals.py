"""Stores that stay up but refuse writes, for real and under load: Redis at maxmemory with noeviction, PostgreSQL
read-only. A refusal is not bad data: the daemon holds its batches, says which sink is blocked and why on
/ready, resumes on its own, and every reading ends up stored exactly once with no dead letter."""
from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request

import psycopg
import pytest
import redis

from tests.integration.clients import DaemonProcess, SteadyPublisher, messages_in, wait_for
from tests.integration.services import free_port, redis_server
from tests.integration.test_faults import assert_exactly_once

pytestmark = pytest.mark.faults  # each holds a store refusing writes for 20 s under load: make test-faults

RATE = 150  # readings per second
TOTAL = 4500  # thirty seconds of traffic: the 20 s refusal falls well inside it
REFUSAL_S = 20


def ready(port: int) -> tuple[int, dict]:
    """GET /ready: (status, body)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def metric(port: int, line_start: str) -> float | None:
    """A sample of /metrics by the start of its line (name and labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
    return None


def watch_ready(daemon: DaemonProcess, port: int, seconds: float, sink: str) -> list[dict]:
    """Poll /ready for `seconds` while the store refuses; the daemon must stay up. Returns the sink's checks
    seen while it was not ready because of that sink, with pipeline_sink_blocked at that moment."""
    seen = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        assert daemon.proc.poll() is None, f"the daemon exited while the store refused:\n{daemon.log_tail(60)}"
        code, body = ready(port)
        check = body.get("checks", {}).get("sinks", {}).get("sinks", {}).get(sink, {})
        if code == 503 and check.get("blocked"):
            seen.append({**check, "problem": body["problems"].get("sinks", ""),
                         "gauge": metric(port, f'pipeline_sink_blocked{{sink="{sink}"}}')})
        time.sleep(0.5)
    return seen


def assert_nothing_dead_lettered_and_no_crash(env, daemon: DaemonProcess) -> str:
    log = daemon.log_text()
    assert daemon.proc.poll() is None, daemon.log_tail(60)
    topics = env.settings().config.kafka.topics
    for topic in (topics.dead_letter, topics.dead_letter_failed, topics.dead_letter_exhausted):
        assert messages_in(topic) == 0, f"a dead letter in {topic}"
    for bad in ("event=dead_letter ", "event=sink_records_refused", "event=thread_crashed", "event=aggregation_failed",
                "event=sink_batch_refused"):
        assert bad not in log, f"{bad} in the log:\n" + "\n".join(line for line in log.splitlines() if bad in line)[:3000]
    return log


@contextlib.contextmanager
def running(env, tmp_path, **config):
    """A daemon of this test's config with its dashboard on a free port: (daemon, port). Its log tail is printed
    when the test fails, and it is stopped either way."""
    port = free_port()
    config = {"dashboard": {"enabled": True, "host": "127.0.0.1", "port": port}, **config}
    cfg_path = env.write_config(tmp_path / "config.yaml", **config)
    env.migrate(env.settings(**config))
    daemon = DaemonProcess(cfg_path, tmp_path / "daemon.log").start()
    try:
        yield daemon, port
    except BaseException:
        print(daemon.log_tail(80))
        raise
    finally:
        daemon.stop()


def fill_to_maxmemory(r: redis.Redis) -> int:
    """Put Redis at maxmemory with noeviction: a limit a little above what it holds, then filler keys up to it."""
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", r.info("memory")["used_memory"] + 2 * 1024 * 1024)
    n = 0
    try:
        while n < 10_000:
            r.set(f"filler:{n}", b"x" * 16384)
            n += 1
    except redis.exceptions.OutOfMemoryError:
        return n
    raise AssertionError("Redis never reached maxmemory")


@pytest.mark.timeout(240)
def test_redis_at_maxmemory_holds_the_batches_and_every_reading_is_stored_once(env, tmp_path):
    server = redis_server(tmp_path).start()
    try:
        with running(env, tmp_path, redis={"port": server.port}) as (daemon, port):
            r = redis.Redis(port=server.port)
            publisher = SteadyPublisher(env.root, TOTAL, RATE)
            publisher.start()
            wait_for(lambda: publisher.published >= TOTAL // 4, 30, what="a quarter of the stream published")
            fillers = fill_to_maxmemory(r)
            seen = watch_ready(daemon, port, REFUSAL_S, "redis")
            r.config_set("maxmemory", 0)  # memory freed: the store takes writes again
            publisher.finish()
            assert_exactly_once(env, TOTAL, timeout=120)
            stream = f"t{env.run_id}:readings"
            wait_for(lambda: r.xlen(stream) >= TOTAL, 60, what=f"{TOTAL} stream entries")
            time.sleep(1.0)
            ids = [fields[b"id"] for _entry, fields in r.xrange(stream)]
            assert (len(ids), len(set(ids))) == (TOTAL, TOTAL)  # every reading once: no entry added twice on retry
            entry_ids = [entry for entry, _fields in r.xrange(stream)]
            assert entry_ids == sorted(entry_ids, key=lambda e: tuple(map(int, e.split(b"-"))))
            log = assert_nothing_dead_lettered_and_no_crash(env, daemon)
            assert seen, f"/ready never named the blocked redis sink ({fillers} filler keys):\n{daemon.log_tail(60)}"
            assert "OOM command not allowed when used memory > 'maxmemory'" in seen[0]["blocked"]
            assert seen[0]["problem"].startswith("redis: blocked for ") and seen[0]["gauge"] == 1
            assert "event=sink_blocked sink=redis kind=refused" in log and "event=sink_unblocked sink=redis" in log
            assert "event=consumer_paused" in log  # back-pressure reached the consumer, as in an outage
            wait_for(lambda: ready(port)[0] == 200, 30, what="/ready green again")
            assert metric(port, 'pipeline_sink_blocked{sink="redis"}') == 0
    finally:
        server.stop()


def set_read_only(db: str, on: bool) -> None:
    """The test's own database read-only (or not) for new sessions; its sessions are ended so they reconnect."""
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{db}" SET default_transaction_read_only = {"on" if on else "off"}')
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))


@pytest.mark.timeout(240)
def test_postgres_read_only_holds_the_batches_and_every_reading_is_stored_once(env, tmp_path):
    db = f"test_{env.run_id}"
    with running(env, tmp_path) as (daemon, port):
        publisher = SteadyPublisher(env.root, TOTAL, RATE)
        publisher.start()
        wait_for(lambda: publisher.published >= TOTAL // 4, 30, what="a quarter of the stream published")
        set_read_only(db, True)
        try:
            seen = watch_ready(daemon, port, REFUSAL_S, "postgres")
        finally:
            set_read_only(db, False)
        publisher.finish()
        assert_exactly_once(env, TOTAL, timeout=120)
        log = assert_nothing_dead_lettered_and_no_crash(env, daemon)
        assert seen, f"/ready never named the blocked postgres sink:\n{daemon.log_tail(60)}"
        assert any("read-only transaction" in s["blocked"] and "ReadOnlySqlTransaction" in s["blocked"] for s in seen)
        assert all(s["gauge"] == 1 for s in seen)
        assert "event=sink_blocked sink=postgres" in log and "event=sink_unblocked sink=postgres" in log
        wait_for(lambda: ready(port)[0] == 200, 30, what="/ready green again")
