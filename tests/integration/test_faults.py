"""Break things for real while readings flow, then prove every valid reading is stored exactly once.

Each test runs the daemon as a child process, publishes a steady stream (unique readings, value =
sequence number), injects one fault mid-stream and checks `measurements` afterwards.
"""
from __future__ import annotations

import time

import psycopg
import pytest

from tests.integration.clients import DaemonProcess, SteadyPublisher, wait_for
from tests.integration.services import kafka_broker, mosquitto, redis_server

RATE = 150  # readings per second: steady, modest, so the test is about faults, not load
TOTAL = 1500  # ten seconds of traffic

pytestmark = pytest.mark.faults  # kills the daemon, restarts or freezes a service: make test-faults


def assert_exactly_once(env, total: int, timeout: float = 60.0) -> None:
    wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] >= total, timeout,
             what=f"{total} measurement rows")
    time.sleep(1.0)  # anything still in flight that would be a duplicate has time to land
    count, distinct, lo, hi = env.query(
        "SELECT count(*), count(DISTINCT value), min(value), max(value) FROM measurements")[0]
    assert (count, distinct, lo, hi) == (total, total, 0, total - 1)


def run_with_fault(env, tmp_path, fault, *, mqtt_port: int = 1883, total: int = TOTAL, **config) -> DaemonProcess:
    cfg_path = env.write_config(tmp_path / "config.yaml", **config)
    env.migrate(env.settings(**config))
    daemon = DaemonProcess(cfg_path, tmp_path / "daemon.log").start()
    publisher = SteadyPublisher(env.root, total, RATE, port=mqtt_port)
    try:
        publisher.start()
        wait_for(lambda: publisher.published >= total // 3, 30, what="a third of the stream published")
        fault(daemon)
        publisher.finish()
        assert_exactly_once(env, total)
    except BaseException:
        print(daemon.log_tail(80))
        raise
    finally:
        daemon.stop()
    return daemon


def test_kill_9_mid_stream_then_restart(env, tmp_path):
    def fault(daemon):
        daemon.kill()
        time.sleep(1)
        daemon.start()

    run_with_fault(env, tmp_path, fault)


def test_sigterm_under_load_drains_within_bound_and_restart_loses_nothing(env, tmp_path):
    bound = 15

    def fault(daemon):
        code, took = daemon.terminate(timeout=bound + 10)
        assert code == 0, daemon.log_tail()
        assert took <= bound, f"shutdown took {took:.1f}s, bound {bound}s"
        assert "event=stopped drained=True" in daemon.log_tail(5)
        daemon.start()

    run_with_fault(env, tmp_path, fault, processing={"shutdown_timeout_s": bound})


def test_postgres_refusing_connections_for_10s(env, tmp_path):
    db = f"test_{env.run_id}"

    def fault(_daemon):
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))
            time.sleep(10)
            conn.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')

    daemon = run_with_fault(env, tmp_path, fault)
    log = daemon.log_tail(100000)
    assert "event=retry operation=postgres_write" in log  # the outage was felt, and waited out
    assert "event=consumer_paused" in log and "event=consumer_resumed" in log  # back-pressure, not a flood
    assert "event=dead_letter" not in log


def test_redis_restart(env, tmp_path):
    redis = redis_server(tmp_path).start()
    try:
        def fault(_daemon):
            redis.stop()
            time.sleep(3)
            redis.start()

        run_with_fault(env, tmp_path, fault, redis={"port": redis.port})
    finally:
        redis.stop()


def test_mosquitto_restart(env, tmp_path):
    broker = mosquitto(tmp_path).start()
    try:
        def fault(_daemon):
            broker.stop()
            time.sleep(2)
            broker.start()

        run_with_fault(env, tmp_path, fault, mqtt_port=broker.port, mqtt={"port": broker.port})
    finally:
        broker.stop()


def test_kafka_unavailable_for_10s(env, tmp_path):
    broker = kafka_broker(tmp_path).start()
    try:
        def fault(_daemon):
            broker.freeze()
            time.sleep(10)
            broker.thaw()

        run_with_fault(env, tmp_path, fault, kafka={"bootstrap_servers": f"127.0.0.1:{broker.port}"})
    finally:
        broker.thaw() if broker.proc and broker.proc.poll() is None else None
        broker.stop()
