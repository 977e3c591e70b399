"""PostgreSQL connections and pools from config (TLS, timeouts, the password from the environment), and the
conversion between epoch seconds and the schema's UTC TIMESTAMP columns."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from ..config import PostgresConfig, Secret


def conninfo(cfg: PostgresConfig, password: Secret, database: str | None = None,
             statement_timeout_ms: int | None = None) -> dict[str, Any]:
    """Keyword arguments for psycopg.connect / ConnectionPool(kwargs=...); the statement timeout is
    postgres.statement_timeout_ms unless given (0: none set, the server's or role's own applies)."""
    timeout = cfg.statement_timeout_ms if statement_timeout_ms is None else statement_timeout_ms
    params: dict[str, Any] = {
        "host": cfg.host,
        "port": cfg.port,
        "dbname": database or cfg.database,
        "user": cfg.user,
        "sslmode": cfg.sslmode,
        "connect_timeout": cfg.connect_timeout_s,
        "application_name": "realtime-pipeline",
    }
    if timeout > 0:
        params["options"] = f"-c statement_timeout={int(timeout)}"
    for key in ("sslrootcert", "sslcert", "sslkey"):
        if getattr(cfg, key):
            params[key] = getattr(cfg, key)
    if password:
        params["password"] = password.reveal()
    return params


def describe(cfg: PostgresConfig, database: str | None = None) -> str:
    """Where we connect, for logs: never includes the password."""
    return f"postgresql://{cfg.user}@{cfg.host}:{cfg.port}/{database or cfg.database}"


def new_pool(cfg: PostgresConfig, password: Secret, name: str, min_size: int = 1, max_size: int = 1,
             configure: Callable[[psycopg.Connection], None] | None = None, timeout: float = 10.0) -> ConnectionPool:
    """A pool not opened yet: for a reader that must come up (and say PostgreSQL is down) while PostgreSQL is away."""
    return ConnectionPool(kwargs=conninfo(cfg, password), min_size=min_size, max_size=max_size, open=False, name=name,
                          timeout=timeout, configure=configure)


def open_pool(cfg: PostgresConfig, password: Secret, name: str, min_size: int = 1, max_size: int = 1,
              configure: Callable[[psycopg.Connection], None] | None = None) -> ConnectionPool:
    """An open pool, or ConnectionError naming the target: fail fast (and let the caller retry) rather
    than leave a pool reconnecting in the background."""
    pool = new_pool(cfg, password, name, min_size, max_size, configure)
    try:
        pool.open(wait=True, timeout=cfg.connect_timeout_s + 1.0)
    except (psycopg.Error, PoolTimeout) as err:
        pool.close()
        raise ConnectionError(f"cannot reach {describe(cfg)}: {err}") from err
    return pool


def utc_naive(ts: float) -> datetime:
    """Epoch seconds -> naive UTC datetime (the schema's TIMESTAMP columns hold UTC)."""
    return datetime.fromtimestamp(ts, timezone.utc).replace(tzinfo=None)


def epoch(value: datetime | None) -> float | None:
    """A TIMESTAMP column's value (naive, UTC) -> epoch seconds."""
    return None if value is None else value.replace(tzinfo=timezone.utc).timestamp()
