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
from tests.integration.services import kafka_broker, mosquitto, redis_server

pytestmark = pytest.mark.faults  # breaks a service, SIGTERMs the daemon and restarts it: make test-faults

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
    # A Mosquitto of this test's own with deploy/mosquitto.conf's queue: the daemon is away for the bound and its
    # restart, over 1,000 readings at RATE, the stock limit of the shared broker (whose drops are not the subject).
    broker = mosquitto(tmp_path).start()
    config.setdefault("processing", {})["shutdown_timeout_s"] = BUDGET
    config.setdefault("mqtt", {})["port"] = broker.port
    cfg_path = env.write_config(tmp_path / "config.yaml", **config)
    env.migrate(env.settings(**config))
    daemon = DaemonProcess(cfg_path, tmp_path / "daemon.log").start()
    publisher = SteadyPublisher(env.root, TOTAL, RATE, port=broker.port)
    broken = False
    try:
        publisher.start()
        wait_for(lambda: publisher.published >= TOTAL // 3, 30, what="a third of the stream published")
        break_it()
        broken = True
        wait_for(lambda: daemon.logged(stuck_on), 30, what=stuck_on)
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
        broker.stop()


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


def test_a_dead_sink_thread_ends_the_daemon_within_the_bound_and_loses_nothing(env):
    # A sink thread that dies (a bug, not an outage) holds no batch: the daemon stops by itself, exit code 1,
    # commits nothing the dead sink did not hold, and the next start stores everything once.
    from tests.integration.clients import Publisher, RunningPipeline

    settings = env.migrate(env.settings(processing={"shutdown_timeout_s": BUDGET}))
    t0 = time.time() - 100
    readings = [(f"{env.root}/dev-{i % 4}", f'{{"metric": "temperature", "value": {i}, "timestamp": {t0 + i}}}')
                for i in range(60)]
    runner = RunningPipeline(settings, env.metrics())
    with runner as pipeline:
        redis_sink = next(s for s in pipeline.sinks if s.name == "redis")

        def broken(_batch):
            raise RuntimeError("a bug in the Redis sink")

        redis_sink.select = broken  # its thread dies at the next batch
        pub = Publisher()
        pub.publish_all(readings[:30])
        died = time.monotonic()
        wait_for(lambda: runner.exit_code is not None, BOUND + 20, what="the daemon to stop after its sink died")
        took = time.monotonic() - died
    print(f"exit code {runner.exit_code} {took:.1f}s after the sink died")
    assert runner.exit_code == 1 and took <= BOUND
    with RunningPipeline(settings, env.metrics()):
        pub.publish_all(readings[30:])
        pub.close()
        assert_stored_exactly_once(env, 60)
