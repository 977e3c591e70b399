"""Refusal is not bad data: each error a store answers with is classified as away, refusing, or a refused record."""
import psycopg
import pytest
import redis
from psycopg import errors as pg
from psycopg_pool import PoolTimeout

from pipeline.clients.errors import is_refusal, is_transient, redis_reply_error, store_message

# The store is up and refuses the service, whatever was written: hold the batch and retry.
REFUSALS = [
    pg.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"),
    pg.InsufficientPrivilege("permission denied for table measurements"),
    pg.DiskFull("could not extend file: No space left on device"),
    pg.OutOfMemory("out of memory"),
    pg.TooManyConnections("sorry, too many clients already"),
    pg.ConfigurationLimitExceeded("too many connections for role"),
    pg.InsufficientResources("insufficient resources"),
    pg.CannotConnectNow("the database system is starting up"),
    pg.AdminShutdown("terminating connection due to administrator command"),
    pg.CrashShutdown("terminating connection because of crash of another server process"),
    pg.IoError("could not write block"),
    redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
    redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
    redis.exceptions.NoPermissionError("this user has no permissions to run the 'xadd' command"),
    redis.exceptions.MasterDownError("Link with MASTER is down and replica-serve-stale-data is set to 'no'."),
    redis.exceptions.TryAgainError("Multiple keys request during rehashing of slot"),
    redis.exceptions.ClusterDownError("The cluster is down"),
    redis.ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist"),
    redis.ResponseError("NOREPLICAS Not enough good replicas to write."),
    redis.ResponseError("BUSY Redis is busy running a script."),
    # How redis-py's pipeline annotates the error of its n-th command (the class is kept for known codes).
    redis.ResponseError("Command # 3 (XADD s * a 2) of pipeline caused error: MISCONF Errors writing to disk"),
]
# The service is away: also held and retried (as before).
AWAY = [psycopg.OperationalError("connection refused"), psycopg.InterfaceError("connection closed"),
        PoolTimeout("couldn't get a connection after 30 sec"), redis.ConnectionError("Error 111 connecting"),
        redis.TimeoutError("Timeout reading from socket"), redis.BusyLoadingError("Redis is loading the dataset")]
# A record the store refuses: isolated by halving and dead-lettered.
RECORD = [pg.NumericValueOutOfRange("value out of range"), pg.CheckViolation("violates check constraint"),
          pg.NotNullViolation("null value"), pg.StringDataRightTruncation("value too long for type character varying(50)"),
          pg.InvalidTextRepresentation("invalid input syntax"),
          redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
          redis.ResponseError("ERR Invalid stream ID specified as stream command argument"),
          ValueError("not a number")]


@pytest.mark.parametrize("err", REFUSALS, ids=lambda e: type(e).__name__ + ":" + str(e)[:12])
def test_a_refusal_of_the_service_is_held_and_retried(err):
    assert is_refusal(err) and is_transient(err)


@pytest.mark.parametrize("err", AWAY, ids=lambda e: type(e).__name__)
def test_a_service_away_is_retried_but_is_no_refusal(err):
    assert is_transient(err) and not is_refusal(err)


@pytest.mark.parametrize("err", RECORD, ids=lambda e: type(e).__name__ + ":" + str(e)[:12])
def test_a_refused_record_is_neither(err):
    assert not is_refusal(err) and not is_transient(err)


@pytest.mark.parametrize("reply, cls", [
    ("OOM command not allowed when used memory > 'maxmemory'.", redis.exceptions.OutOfMemoryError),
    ("READONLY You can't write against a read only replica.", redis.exceptions.ReadOnlyError),
    ("NOPERM this user has no permissions to run the 'xadd' command", redis.exceptions.NoPermissionError),
    ("EXECABORT Transaction discarded because of previous errors.", redis.exceptions.ExecAbortError),
    ("WRONGTYPE Operation against a key holding the wrong kind of value", redis.ResponseError),
])
def test_a_reply_read_off_the_wire_becomes_the_exception_redis_py_raises(reply, cls):
    err = redis_reply_error(reply)
    assert type(err) is cls
    assert is_refusal(err) == reply.startswith(("OOM", "READONLY", "NOPERM"))


def test_the_store_message_keeps_the_stores_own_words_and_code():
    msg = store_message(redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."))
    assert msg == "OutOfMemoryError: OOM command not allowed when used memory > 'maxmemory'."
    msg = store_message(pg.ReadOnlySqlTransaction("cannot execute INSERT in a read-only\n transaction"))
    assert msg == "ReadOnlySqlTransaction (25006): cannot execute INSERT in a read-only transaction"
    piped = redis.exceptions.OutOfMemoryError("Command # 1 (XADD t:alerts MAXLEN ~ 100000 * event opened ...) of "
                                              "pipeline caused error: command not allowed when used memory > 'maxmemory'.")
    assert store_message(piped) == "OutOfMemoryError: OOM command not allowed when used memory > 'maxmemory'."
