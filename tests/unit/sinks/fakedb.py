"""In-memory stand-ins for a psycopg connection pool and a redis-py client: they record what a sink sends and
answer with scripted results. What the SQL does to real tables is tested against PostgreSQL in tests/integration."""
from __future__ import annotations

from contextlib import contextmanager


class FakeCopy:
    def __init__(self, sql: str, log: list):
        self.sql, self.rows, self.text = sql, [], []
        log.append(self)

    def write_row(self, row) -> None:
        self.rows.append(tuple(row))

    def write(self, data: str) -> None:
        self.text.append(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class FakeCursor:
    """`results` maps a statement's first words to (rowcount, rows): what the database would answer."""

    def __init__(self, results: dict[str, tuple[int, list]]):
        self.results = results
        self.executed: list[tuple[str, object]] = []
        self.copies: list[FakeCopy] = []
        self.rowcount = -1
        self._rows: list = []

    def _answer(self, sql: str) -> None:
        for prefix, (rowcount, rows) in self.results.items():
            if sql.startswith(prefix):
                self.rowcount, self._rows = rowcount, list(rows)
                return
        self.rowcount, self._rows = 0, []

    def execute(self, sql: str, params=None):
        self.executed.append((sql, params))
        self._answer(sql)
        return self

    def executemany(self, sql: str, params_seq) -> None:
        self.executed.append((sql, list(params_seq)))
        self.rowcount = len(self.executed[-1][1])  # every row affected (psycopg sums executemany's counts)

    def copy(self, sql: str) -> FakeCopy:
        return FakeCopy(sql, self.copies)

    def fetchall(self) -> list:
        return self._rows

    def fetchone(self):
        return self._rows[0] if self._rows else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class FakeConnection:
    def __init__(self, cursor: FakeCursor):
        self.cur = cursor
        self.transactions = 0

    @contextmanager
    def transaction(self):
        self.transactions += 1
        yield

    def cursor(self) -> FakeCursor:
        return self.cur

    def execute(self, sql: str, params=None):
        return self.cur.execute(sql, params)


class FakePool:
    def __init__(self, results: dict[str, tuple[int, list]] | None = None):
        self.cursor = FakeCursor(results or {})
        self.conn = FakeConnection(self.cursor)
        self.closed = False

    @contextmanager
    def connection(self):
        yield self.conn

    def close(self) -> None:
        self.closed = True


class FakeRedis:
    """pipeline(transaction=False) -> a pipe that records XADDs; execute() moves them to `sent`."""

    def __init__(self):
        self.sent: list[tuple] = []
        self._pending: list[tuple] = []

    def pipeline(self, transaction=True):
        return self

    def xadd(self, name, fields, maxlen=None, approximate=True, **_):
        self._pending.append((name, dict(fields), maxlen, approximate))

    def execute(self):
        self.sent, self._pending = self.sent + self._pending, []
        return []

    def close(self) -> None:
        pass
