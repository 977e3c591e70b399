#!/usr/bin/env python3
"""Versioned, forward-only database migrations.

    python migrations.py [--config PATH]     apply what is missing (a no-op when up to date)
    python migrations.py --status            list applied and pending migrations

Migrations are the files pipeline/schema/NNNN_name.sql, applied in order, each in its own
transaction and recorded in `schema_migrations`. The database named in the config is created first
if it does not exist (connecting to the maintenance database). Every run then makes the partitions of
`measurements` and `logs` for now and `storage.partitions_ahead` intervals ahead (pipeline/storage/partitions.py),
so a fresh database takes writes before the daemon has started.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import psycopg
from psycopg import sql

from pipeline.config import Settings, load_for_cli
from pipeline.clients.postgres import conninfo, describe
from pipeline.storage.partitions import ensure_ahead

SCHEMA_DIR = Path(__file__).resolve().parent / "pipeline" / "schema"
FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
LOCK_ID = 0x5E45_0D47  # advisory lock: two instances starting together do not migrate twice


def available() -> list[tuple[int, str, Path]]:
    found = []
    for path in sorted(SCHEMA_DIR.iterdir()):
        m = FILE_RE.match(path.name)
        if m:
            found.append((int(m.group(1)), m.group(2), path))
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise SystemExit("migrations: two files share a version number")
    return found


def ensure_database(settings: Settings) -> bool:
    """Create the configured database if missing. Returns True if it was created."""
    pg = settings.config.postgres
    params = conninfo(pg, settings.secrets.postgres_password, database=pg.maintenance_database)
    with psycopg.connect(**params, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (pg.database,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(pg.database)))
        return True


def applied(conn: psycopg.Connection) -> dict[int, str]:
    conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
        version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'))""")
    return {v: n for v, n in conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")}


def migrate(settings: Settings, out=sys.stdout) -> list[int]:
    """Apply pending migrations; returns the versions applied."""
    if ensure_database(settings):
        print(f"created database {settings.config.postgres.database}", file=out)
    # No statement timeout: one migration may rewrite a large table (a cancelled one would be rolled back).
    params = conninfo(settings.config.postgres, settings.secrets.postgres_password, statement_timeout_ms=0)
    done: list[int] = []
    with psycopg.connect(**params, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_ID,))
        try:
            have = applied(conn)
            for version, name, path in available():
                if version in have:
                    continue
                with conn.transaction():
                    conn.execute(path.read_text(encoding="utf-8"))
                    conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
                print(f"applied {version:04d}_{name}", file=out)
                done.append(version)
            made = ensure_ahead(conn, settings.config.storage)
            if made:
                print(f"created partitions {', '.join(made)}", file=out)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_ID,))
    if not done:
        print(f"up to date: {describe(settings.config.postgres)}", file=out)
    return done


def status(settings: Settings, out=sys.stdout) -> None:
    params = conninfo(settings.config.postgres, settings.secrets.postgres_password)
    try:
        with psycopg.connect(**params, autocommit=True) as conn:
            have = applied(conn)
    except psycopg.OperationalError:
        have = {}
        print(f"database {settings.config.postgres.database} not reachable or not created yet", file=out)
    for version, name, _ in available():
        state = "applied" if version in have else "pending"
        print(f"{version:04d}_{name}  {state}", file=out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Apply database migrations.")
    p.add_argument("--config", help="config file (default: config.yaml)")
    p.add_argument("--status", action="store_true", help="list applied and pending migrations")
    args = p.parse_args(argv)
    settings = load_for_cli(args.config)
    try:
        if args.status:
            status(settings)
        else:
            migrate(settings)
    except psycopg.Error as err:
        print(f"migration failed: {describe(settings.config.postgres)}: {str(err).strip()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
