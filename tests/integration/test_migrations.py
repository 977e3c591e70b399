"""migrations.py against a real PostgreSQL: creates the database, the exact seed schema, idempotent."""
import subprocess
import sys

from migrations import available
from tests.integration.conftest import ROOT

SEED_COLUMNS = {
    "sensors": [("sensor_id", "character varying", 50, "NO"), ("type", "character varying", 20, "NO"),
                ("location", "character varying", 100, "YES"), ("created_at", "timestamp without time zone", None, "YES")],
    "measurements": [("id", "bigint", None, "NO"), ("sensor_id", "character varying", 50, "YES"),
                     ("metric", "character varying", 20, "NO"), ("value", "double precision", None, "NO"),
                     ("timestamp", "timestamp without time zone", None, "NO"), ("processed", "boolean", None, "YES")],
    "aggregations": [("id", "bigint", None, "NO"), ("sensor_id", "character varying", 50, "YES"),
                     ("metric", "character varying", 20, "NO"), ("avg_value", "double precision", None, "NO"),
                     ("min_value", "double precision", None, "NO"), ("max_value", "double precision", None, "NO"),
                     ("count", "integer", None, "NO"), ("period", "character varying", 10, "NO"),
                     ("timestamp", "timestamp without time zone", None, "NO")],
    "alerts": [("id", "bigint", None, "NO"), ("sensor_id", "character varying", 50, "YES"),
               ("type", "character varying", 20, "NO"), ("message", "text", None, "NO"),
               ("severity", "character varying", 10, "NO"), ("timestamp", "timestamp without time zone", None, "NO"),
               ("resolved", "boolean", None, "YES"), ("resolved_at", "timestamp without time zone", None, "YES")],
}


def run(config, *args):
    return subprocess.run([sys.executable, str(ROOT / "migrations.py"), "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_migrations_create_database_and_seed_schema_and_are_idempotent(env, tmp_path):
    cfg = env.write_config(tmp_path / "config.yaml")
    env._dbs.add(f"test_{env.run_id}")
    status = run(cfg, "--status")
    assert status.returncode == 0 and "0001_initial  pending" in status.stdout

    first = run(cfg)
    assert first.returncode == 0, first.stderr
    assert f"created database test_{env.run_id}" in first.stdout and "applied 0001_initial" in first.stdout

    second = run(cfg)
    assert second.returncode == 0 and "applied" not in second.stdout and "up to date" in second.stdout

    for table, columns in SEED_COLUMNS.items():
        got = env.query("SELECT column_name, data_type, character_maximum_length, is_nullable FROM information_schema.columns "
                        "WHERE table_name = %s ORDER BY ordinal_position", (table,))
        extra = got[len(columns):]  # later migrations may only add columns, after the seed's
        assert got[:len(columns)] == columns, table
        assert all(col[3] == "YES" for col in extra), f"{table}: added columns must be nullable"
    # Declared foreign keys only: each partition of `measurements` carries a clone (conparentid set).
    fks = env.query("SELECT conrelid::regclass::text FROM pg_constraint WHERE contype = 'f' AND conparentid = 0 ORDER BY 1")
    assert [r[0] for r in fks] == ["aggregations", "alerts", "measurements"]
    versions = env.query("SELECT version FROM schema_migrations ORDER BY version")
    # Every migration file applied, in order (numbers are reserved per branch, so gaps can exist until a merge).
    assert [v[0] for v in versions] == [version for version, _name, _path in available()]
    status = run(cfg, "--status")
    assert "pending" not in status.stdout


def test_migrations_report_unreachable_database(env, tmp_path):
    cfg = env.write_config(tmp_path / "config.yaml", postgres={"port": 1, "connect_timeout_s": 2})
    proc = run(cfg)
    assert proc.returncode == 1 and proc.stderr.startswith("migration failed: postgresql://postgres@localhost:1/")
