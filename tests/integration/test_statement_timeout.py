"""postgres.statement_timeout_ms against the real server: a statement blocked by a lock that the test holds is
cancelled by the server after the timeout (QueryCanceled, which the retry loops take as transient), and the
PostgreSQL sink's write goes through once the lock is released."""
from __future__ import annotations

import threading
import time

import psycopg
import psycopg.errors

from pipeline.clients.errors import is_transient
from pipeline.clients.postgres import conninfo
from pipeline.records import Reading
from pipeline.sinks.postgres import PostgresSink

TIMEOUT_MS = 1000


def holding_lock(env, table: str) -> psycopg.Connection:
    """A connection in a transaction holding ACCESS EXCLUSIVE on `table`: every other statement on it waits."""
    conn = env.db()
    conn.autocommit = False
    conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    return conn


def timed(fn) -> tuple[float, BaseException | None, object]:
    """Run fn in a thread (so a statement that never ends cannot hang the test): (seconds, error, result)."""
    out: dict = {}

    def run():
        started = time.monotonic()
        try:
            out["result"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            out["error"] = err
        out["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(15)
    assert not thread.is_alive(), "the blocked statement was not cancelled within 15 s"
    return out["seconds"], out.get("error"), out.get("result")


def test_a_statement_waiting_on_a_held_lock_is_cancelled_after_the_timeout(env):
    settings = env.migrate(env.settings(postgres={"statement_timeout_ms": TIMEOUT_MS}))
    lock = holding_lock(env, "sensors")
    try:
        with psycopg.connect(**conninfo(settings.config.postgres, settings.secrets.postgres_password), autocommit=True) as conn:
            assert conn.execute("SHOW statement_timeout").fetchone()[0] == "1s"
            seconds, err, _ = timed(lambda: conn.execute("SELECT count(*) FROM sensors").fetchone())
    finally:
        lock.rollback()
        lock.close()
    assert isinstance(err, psycopg.errors.QueryCanceled), err
    assert "statement timeout" in str(err) and is_transient(err)  # held and retried, never dead-lettered
    assert 0.9 <= seconds < 10, seconds


def test_the_postgres_sink_is_not_held_by_a_stuck_lock_and_writes_once_it_is_released(env):
    settings = env.migrate(env.settings(postgres={"statement_timeout_ms": TIMEOUT_MS}))
    cfg = settings.config
    sink = PostgresSink(cfg.postgres, settings.secrets.postgres_password, settings=cfg.sinks.postgres, retry=cfg.retry,
                        metrics=env.metrics(), queue_max_batches=1)
    sink.start()
    now = time.time()
    readings = [Reading("lock-1", "sensor", None, "temperature", 21.5, now, now)]
    try:
        lock = holding_lock(env, "measurements")
        try:
            seconds, err, _ = timed(lambda: sink.write(readings))
        finally:
            lock.rollback()
            lock.close()
        assert isinstance(err, psycopg.errors.QueryCanceled) and is_transient(err), err
        assert 0.9 <= seconds < 10, seconds
        assert env.query("SELECT count(*) FROM measurements")[0][0] == 0  # rolled back whole
        _, err, written = timed(lambda: sink.write(readings))  # the retry, with the lock gone
        assert err is None and written == 1
    finally:
        sink.close()
    assert env.query("SELECT sensor_id, value FROM measurements") == [("lock-1", 21.5)]
