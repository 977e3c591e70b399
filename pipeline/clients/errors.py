"""Which errors mean "the service is away, try again" rather than "the record is refused": one answer for
every retry loop (sinks, operators, start-up), so an outage is never dead-lettered and a refusal never
retried forever."""
from __future__ import annotations

import psycopg
import redis
from psycopg_pool import PoolTimeout

POSTGRES_AWAY = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)
REDIS_AWAY = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
SERVICE_AWAY = POSTGRES_AWAY + REDIS_AWAY


def is_transient(err: BaseException) -> bool:
    """True when PostgreSQL or Redis could not be reached or did not answer in time."""
    return isinstance(err, SERVICE_AWAY)
