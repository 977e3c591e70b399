"""PostgreSQL connection parameters from config."""
from pipeline import config as c
from pipeline.clients.postgres import conninfo


def test_postgres_tls_files_reach_libpq():
    cfg = c.parse({"postgres": {"sslmode": "verify-full", "sslrootcert": "/ca.pem"}}, {})
    params = conninfo(cfg.postgres, c.Secret("pw"))
    assert params["sslmode"] == "verify-full" and params["sslrootcert"] == "/ca.pem" and "sslcert" not in params


def test_every_connection_carries_the_statement_timeout():
    cfg = c.parse({}, {})
    assert conninfo(cfg.postgres, c.Secret(""))["options"] == "-c statement_timeout=30000"  # the default
    cfg = c.parse({"postgres": {"statement_timeout_ms": 1500}}, {})
    assert conninfo(cfg.postgres, c.Secret(""))["options"] == "-c statement_timeout=1500"
    # Maintenance passes its own; 0 sets none (the server's or role's own setting applies).
    assert conninfo(cfg.postgres, c.Secret(""), statement_timeout_ms=600000)["options"] == "-c statement_timeout=600000"
    assert "options" not in conninfo(cfg.postgres, c.Secret(""), statement_timeout_ms=0)
    assert "options" not in conninfo(c.parse({"postgres": {"statement_timeout_ms": 0}}, {}).postgres, c.Secret(""))
