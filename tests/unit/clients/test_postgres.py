"""PostgreSQL connection parameters from config."""
from pipeline import config as c
from pipeline.clients.postgres import conninfo


def test_postgres_tls_files_reach_libpq():
    cfg = c.parse({"postgres": {"sslmode": "verify-full", "sslrootcert": "/ca.pem"}}, {})
    params = conninfo(cfg.postgres, c.Secret("pw"))
    assert params["sslmode"] == "verify-full" and params["sslrootcert"] == "/ca.pem" and "sslcert" not in params
