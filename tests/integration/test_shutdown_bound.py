"""SIGTERM ends the daemon within processing.shutdown_timeout_s + 5 s whatever is broken at the time, and
what it did not commit comes back: after a restart every published reading is stored exactly once.

Each test runs the daemon as a child process while readings are published, breaks one service for that
test only (its own database refuses connections, its own Redis or Kafka broker stops or freezes), sends
SIGTERM once the daemon is stuck on it, then repairs the service, starts the daemon again and counts.
"""
from __future__ import annotations

import subprocess
import time

import psycopg
import pytest

from tests.integration.clients import DaemonProcess, SteadyPublisher, wait_for
from tests.integration.services import kafka_broker, redis_server

RATE = 150  # readings per second
TOTAL = 1500  # ten seconds of traffic
BUDGET = 6  # processing.shutdown_timeout_s
BOUND = BUDGET + 5  # what systemd (or an operator) may rely on


def assert_stored_exactly_once(env, total: int, timeout: float = 90.0) -> None:
    wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] >= total, timeout,
             what=f"{total} measurement rows")
    time.sleep(1.0)  # anything still in flight that would be a duplicate has time to land
    rows, identities, values = env.query(
        "SELECT count(*), count(DISTINCT (sensor_id, metric, timestamp)), count(DISTINCT value) FROM measurements")[0]
    assert (rows, identities, values) == (total, total, total)


def sigterm_within_bound(daemon: DaemonProcess) -> tuple[int, float]:
    try:
        code, took = daemon.terminate(timeout=BOUND + 20)
    except subprocess.TimeoutExpired:
        daemon.kill()
        pytest.fail(f"no exit {BOUND + 20}s after SIGTERM (bound {BOUND}s):\n{daemon.log_tail(30)}")
    print(f"exit code {code} after {took:.1f}s")
    assert took <= BOUND, f"shutdown took {took:.1f}s, bound {BOUND}s\n{daemon.log_tail(30)}"
    return code, took


def run_sigterm_during(env, tmp_path, break_it, stuck_on: str, repair, **config) -> float:
    """Publish, break a service, SIGTERM once the daemon shows `stuck_on`, repair, restart, count."""
    config.setdefault("processing", {})["shutdown_timeout_s"] = BUDGET
    cfg_path = env.write_config(tmp_path / "config.yaml", **config)
    env.migrate(env.settings(**config))
    daemon = DaemonProcess(cfg_path, tmp_path / "daemon.log").start()
    publisher = SteadyPublisher(env.root, TOTAL, RATE)
    broken = False
    try:
        publisher.start()
        wait_for(lambda: publisher.published >= TOTAL // 3, 30, what="a third of the stream published")
        break_it()
        broken = True
        wait_for(lambda: daemon._logged(stuck_on), 30, what=stuck_on)
        time.sleep(1.0)  # the queues in front of the broken service fill up
        code, took = sigterm_within_bound(daemon)
        assert code == 1, "a drain that could not finish must not exit 0"
        assert "event=stopped drained=False" in daemon.log_tail(10)
        repair()
        broken = False
        daemon.start()
        publisher.finish()
        assert_stored_exactly_once(env, TOTAL)
        return took
    except BaseException:
        print(daemon.log_tail(120))
        raise
    finally:
        if broken:
            repair()
        daemon.stop()


def test_sigterm_while_postgres_refuses_connections(env, tmp_path):
    db = f"test_{env.run_id}"

    def allow(flag: bool):
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS {str(flag).lower()}')
            if not flag:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))

    # consumer_paused: the sink queue is full, the state in which the stop request used to wait for space.
    run_sigterm_during(env, tmp_path, lambda: allow(False), "event=consumer_paused", lambda: allow(True))


def test_sigterm_while_redis_is_down(env, tmp_path):
    redis = redis_server(tmp_path).start()
    try:
        run_sigterm_during(env, tmp_path, redis.stop, "event=consumer_paused", redis.start,
                           redis={"port": redis.port})
    finally:
        redis.stop()


def test_sigterm_while_kafka_is_frozen(env, tmp_path):
    broker = kafka_broker(tmp_path).start()  # our own broker: the shared one is never frozen
    try:
        def freeze():
            broker.freeze()
            time.sleep(1.0)  # produced messages wait for it, the consumer fetches nothing

        run_sigterm_during(env, tmp_path, freeze, "event=mqtt_subscribed", broker.thaw,
                           kafka={"bootstrap_servers": f"127.0.0.1:{broker.port}"})
    finally:
        broker.thaw() if broker.proc and broker.proc.poll() is None else None
        broker.stop()
