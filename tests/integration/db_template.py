"""A test's database as a copy of one migrated template, made once per test run.

Running the ten migrations for each of some 400 integration tests cost PostgreSQL about a second of CPU each on a
2-core box; `CREATE DATABASE ... TEMPLATE` copies the result in about half of that. The template is keyed by
what decides the schema (the migration files and the partition settings), so a test that runs a subset of the
migrations (tests/integration/test_partitioned_history.py) or other partition settings gets a template of its
own, or none: it then migrates from scratch as before. `migrations.migrate` still runs on the copy (nothing to
apply; partitions ahead are checked), so the code under test is the same.

The templates of a run are listed in a file of the run's folder (tests/conftest.py makes it); the run's
controller drops them at the end (`drop_templates`)."""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import msgspec
import psycopg
from psycopg import sql

import migrations
from pipeline.config import Settings

RUN_DIR = "TESTS_RUN_DIR"  # set by tests/conftest.py for the run and inherited by its workers
MADE = "db-templates"


def _maintenance() -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True, connect_timeout=5)


def template_name(settings: Settings) -> str | None:
    """The template for this schema in this run, or None outside a run folder."""
    run = os.environ.get(RUN_DIR)
    if run is None:
        return None
    digest = hashlib.sha1()
    for version, name, path in migrations.available():
        digest.update(f"{version}:{name}:".encode() + path.read_bytes())
    storage = settings.config.storage
    digest.update(f"{storage.partition_interval}:{storage.partitions_ahead}".encode())
    return f"test_tpl_{Path(run).name[-8:]}_{digest.hexdigest()[:12]}".lower().replace("-", "_")


def _exists(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def _ensure_template(conn: psycopg.Connection, name: str, settings: Settings) -> None:
    """Made by the first worker that needs it; the others wait on the advisory lock, then find it."""
    key = int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big", signed=True)
    conn.execute("SELECT pg_advisory_lock(%s)", (key,))
    try:
        if _exists(conn, name):
            return
        postgres = msgspec.structs.replace(settings.config.postgres, database=name)
        made = msgspec.structs.replace(settings, config=msgspec.structs.replace(settings.config, postgres=postgres))
        migrations.migrate(made, out=open(os.devnull, "w"))
        # A template nobody connects to: an autovacuum worker connected to it would make a copy fail.
        conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
            sql.Identifier(name)))
        with open(Path(os.environ[RUN_DIR]) / MADE, "a") as f:
            f.write(name + "\n")
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def create_from_template(settings: Settings) -> bool:
    """Create the settings' database as a copy of the run's migrated template; False where none applies (outside
    a run folder, or the database exists already) and the caller migrates as usual."""
    name = template_name(settings)
    target = settings.config.postgres.database
    if name is None:
        return False
    with _maintenance() as conn:
        if _exists(conn, target):
            return False
        _ensure_template(conn, name, settings)
        for attempt in range(20):
            try:
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(target),
                                                                               sql.Identifier(name)))
                return True
            except psycopg.errors.ObjectInUse:  # a copy needs the template unused for a moment: wait, retry
                time.sleep(0.1 * (attempt + 1))
        return False


def drop_templates(run_dir: Path) -> None:
    """The run's controller, at its end: every template the run made goes."""
    listed = run_dir / MADE
    if not listed.exists():
        return
    with _maintenance() as conn:
        for name in sorted(set(listed.read_text().split())):
            conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
