"""Which errors mean "the service will not take this now, try again" rather than "the record is refused": one
answer for every retry loop (sinks, operators, start-up), so neither an outage nor a refusing store is ever
dead-lettered, and a refused record is never retried forever.

Two kinds hold the work and retry: the service is away (unreachable, timed out, loading), and the service is
up but refuses every write (out of memory, read-only, no privilege, disk full, too many connections, a
failover). Classified by what the store says (its SQLSTATE or its error code), not by what was written.
"""
from __future__ import annotations

import psycopg
import redis
from psycopg_pool import PoolTimeout

POSTGRES_AWAY = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)
REDIS_AWAY = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
SERVICE_AWAY = POSTGRES_AWAY + REDIS_AWAY

# SQLSTATEs of a server that refuses the service, whatever the data: read-only (a standby, or
# default_transaction_read_only), lost privilege, and the classes 08 (connection), 53 (insufficient resources:
# disk full, out of memory, too many connections), 57 (operator intervention: shutdown, failover, cannot
# connect now) and 58 (system error: I/O).
POSTGRES_REFUSAL_STATES = frozenset({"25006", "42501"})
POSTGRES_REFUSAL_CLASSES = frozenset({"08", "53", "57", "58"})
# Redis error codes (the first word of an error reply) of a server that refuses writes for now: out of memory
# (maxmemory with noeviction), a replica (read-only), an ACL without the command, a failed background save
# (MISCONF), a primary down or too few replicas, a busy script, loading, a cluster being reconfigured.
REDIS_REFUSAL_CODES = frozenset({"OOM", "READONLY", "NOPERM", "NOAUTH", "MISCONF", "MASTERDOWN", "NOREPLICAS",
                                 "BUSY", "LOADING", "TRYAGAIN", "CLUSTERDOWN"})
REDIS_REFUSAL_CLASSES = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError,
                         redis.exceptions.NoPermissionError, redis.exceptions.MasterDownError,
                         redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError)
_REDIS_CLASS_OF = {"OOM": redis.exceptions.OutOfMemoryError, "READONLY": redis.exceptions.ReadOnlyError,
                   "NOPERM": redis.exceptions.NoPermissionError, "LOADING": redis.exceptions.BusyLoadingError,
                   "MASTERDOWN": redis.exceptions.MasterDownError, "TRYAGAIN": redis.exceptions.TryAgainError,
                   "CLUSTERDOWN": redis.exceptions.ClusterDownError, "EXECABORT": redis.exceptions.ExecAbortError}
_PIPELINE_PREFIX = "of pipeline caused error: "  # how redis-py annotates the error of a pipelined command


def redis_code(err: BaseException) -> str | None:
    """The Redis error code of a refused command (OOM, READONLY, ...), from its class or its message."""
    for code, cls in _REDIS_CLASS_OF.items():
        if type(err) is cls:
            return code
    text = str(err)
    at = text.find(_PIPELINE_PREFIX)
    if at >= 0:
        text = text[at + len(_PIPELINE_PREFIX):]
    word = text.split(" ", 1)[0]
    return word if word.isupper() else None


def redis_reply_error(text: str) -> redis.ResponseError:
    """The redis-py exception for an error reply read off the wire (`OOM command not allowed ...`), as
    redis-py's own parser would raise it, so a hand-read reply is classified like any other."""
    code, _, rest = text.partition(" ")
    cls = _REDIS_CLASS_OF.get(code)
    return cls(rest) if cls is not None else redis.ResponseError(text)


def is_refusal(err: BaseException) -> bool:
    """True when the store is up but refuses the service (not this record): hold the work and retry."""
    if isinstance(err, psycopg.Error):
        state = getattr(err, "sqlstate", None) or ""
        return state in POSTGRES_REFUSAL_STATES or state[:2] in POSTGRES_REFUSAL_CLASSES
    if isinstance(err, REDIS_REFUSAL_CLASSES):
        return True
    if isinstance(err, redis.ResponseError):
        return redis_code(err) in REDIS_REFUSAL_CODES
    return False


def is_transient(err: BaseException) -> bool:
    """True when PostgreSQL or Redis could not be reached, did not answer in time, or refuses the service
    for now: the work is held and retried, never dead-lettered."""
    return isinstance(err, SERVICE_AWAY) or is_refusal(err)


def store_message(err: BaseException) -> str:
    """What the store said, for /ready, the dashboard and the log: its class and message, one line."""
    text = " ".join(str(err).split())
    state = getattr(err, "sqlstate", None)
    if isinstance(err, redis.RedisError):
        at = text.find(_PIPELINE_PREFIX)  # the server's words, not redis-py's note on which command it was
        if at >= 0:
            text = text[at + len(_PIPELINE_PREFIX):]
        code = redis_code(err)
        if code and not text.startswith(code):
            text = f"{code} {text}"
    return f"{type(err).__name__}{f' ({state})' if state else ''}: {text}"[:300]
