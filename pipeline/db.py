"""PostgreSQL connection settings shared by migrations, the sink and the dashboard."""
from __future__ import annotations

from typing import Any

from .config import PostgresConfig, Secret


def conninfo(cfg: PostgresConfig, password: Secret, database: str | None = None) -> dict[str, Any]:
    """Keyword arguments for psycopg.connect / ConnectionPool(kwargs=...)."""
    params: dict[str, Any] = {
        "host": cfg.host,
        "port": cfg.port,
        "dbname": database or cfg.database,
        "user": cfg.user,
        "sslmode": cfg.sslmode,
        "connect_timeout": cfg.connect_timeout_s,
        "application_name": "realtime-pipeline",
    }
    for key in ("sslrootcert", "sslcert", "sslkey"):
        if getattr(cfg, key):
            params[key] = getattr(cfg, key)
    if password:
        params["password"] = password.reveal()
    return params


def describe(cfg: PostgresConfig, database: str | None = None) -> str:
    """Where we connect, for logs: never includes the password."""
    return f"postgresql://{cfg.user}@{cfg.host}:{cfg.port}/{database or cfg.database}"
