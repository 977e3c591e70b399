"""The sensor registry (PostgreSQL `sensors`): list, add, import, relabel, remove.

    python -m pipeline.sensors [--config PATH] list    [--type T] [--match TEXT] [--limit N] [--json]
    python -m pipeline.sensors [--config PATH] add     ID --type T [--location L]
    python -m pipeline.sensors [--config PATH] import  FILE.csv [--update]
    python -m pipeline.sensors [--config PATH] relabel ID [--type T] [--location L | --no-location]
    python -m pipeline.sensors [--config PATH] remove  ID [--purge]

The table is the one truth about a sensor's type and location; with `limits.registration: known` it is also
the list of ids the daemon accepts. A running daemon rereads it every `limits.registry_refresh_s`. The Redis
mirror (`latest:<id>`, what the dashboard shows) is updated here at once for relabels and removals; the daemon
writes the registered labels there with each reading too.

CSV for `import`: one sensor a row, `sensor_id,type,location` (location may be empty; a first row naming the
columns is skipped). Rows are checked like readings (id, type and location rules, reserved ids) before any is
stored; a bad row names its line. Existing ids are left as they are unless `--update` relabels them.
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from typing import Iterable

import orjson
import psycopg
from psycopg import sql

from ..clients.postgres import conninfo
from ..clients.redis import connect as redis_connect
from ..config import Settings, load_for_cli
from ..stages.limits import reserved_reason
from ..records import Invalid
from ..stages.validate import LOCATION_MAX, TYPE_MAX, TYPE_RE, _check_text, check_sensor_id

Entry = tuple[str, str, "str | None"]  # (sensor_id, type, location)
HEADER = ("sensor_id", "type", "location")

UPSERT = ("INSERT INTO sensors (sensor_id, type, location) "
          "SELECT * FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[]) ")
INSERT_NEW = UPSERT + "ON CONFLICT (sensor_id) DO NOTHING RETURNING sensor_id"
# xmax = 0 only for a row this statement inserted: tells added from relabelled in one statement.
INSERT_OR_RELABEL = (UPSERT + "ON CONFLICT (sensor_id) DO UPDATE SET type = EXCLUDED.type, location = EXCLUDED.location "
                     "WHERE (sensors.type, sensors.location) IS DISTINCT FROM (EXCLUDED.type, EXCLUDED.location) "
                     "RETURNING sensor_id, xmax = 0")
# The tables whose rows name a sensor (measurements, aggregations, alerts, ...): found, not listed, so a later
# migration's table is covered too. conparentid = 0: the partitioned table's constraint, not each partition's.
REFERENCING = ("SELECT c.conrelid::regclass::text, a.attname FROM pg_constraint c JOIN pg_attribute a "
               "ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] "
               "WHERE c.contype = 'f' AND c.confrelid = 'sensors'::regclass AND c.conparentid = 0 ORDER BY 1")


class UsageError(Exception):
    """A request the registry refuses (bad id, unknown sensor, data left): printed as one line, exit status 1."""


def check_entry(sensor_id: str, sensor_type: str, location: str | None) -> Entry:
    """The rules a reading's id, type and location follow, and no reserved id or type; raises UsageError."""
    try:
        check_sensor_id(sensor_id)
        _check_text(sensor_type, "type", TYPE_MAX, TYPE_RE)
        if location is not None:
            _check_text(location, "location", LOCATION_MAX)
    except Invalid as err:
        raise UsageError(f"{sensor_id!r}: {err}") from None
    reserved = reserved_reason(sensor_id, sensor_type)
    if reserved is not None:
        raise UsageError(f"{sensor_id!r} (type {sensor_type!r}): {reserved}, the daemon writes these itself")
    return sensor_id, sensor_type, location


def parse_csv(text: str) -> list[Entry]:
    """CSV text -> checked entries in file order; raises UsageError naming the first bad line."""
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if not entries and cells[0].lower() == HEADER[0]:  # the row naming the columns
            continue
        if len(cells) not in (2, 3):
            raise UsageError(f"line {line}: expected sensor_id,type[,location], got {len(cells)} column(s)")
        sensor_id, sensor_type = cells[0], cells[1]
        location = cells[2] if len(cells) == 3 and cells[2] else None
        try:
            entries.append(check_entry(sensor_id, sensor_type, location))
        except UsageError as err:
            raise UsageError(f"line {line}: {err}") from None
        if sensor_id in seen:
            raise UsageError(f"line {line}: {sensor_id!r} already on line {seen[sensor_id]}")
        seen[sensor_id] = line
    return entries


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.sensors", description="Manage the sensor registry.")
    p.add_argument("--config", help="config file (default: config.yaml)")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="registered sensors, by id")
    ls.add_argument("--type", dest="sensor_type", help="only this type")
    ls.add_argument("--match", help="only ids containing this text")
    ls.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
    ls.add_argument("--json", action="store_true", help="one JSON object a line")
    add = sub.add_parser("add", help="register one sensor")
    add.add_argument("sensor_id")
    add.add_argument("--type", dest="sensor_type", required=True)
    add.add_argument("--location")
    imp = sub.add_parser("import", help="register the sensors of a CSV file (sensor_id,type,location)")
    imp.add_argument("file", help="CSV file, '-' for standard input")
    imp.add_argument("--update", action="store_true", help="relabel ids already registered (default: leave them)")
    rel = sub.add_parser("relabel", help="change a registered sensor's type and/or location")
    rel.add_argument("sensor_id")
    rel.add_argument("--type", dest="sensor_type")
    where = rel.add_mutually_exclusive_group()
    where.add_argument("--location")
    where.add_argument("--no-location", action="store_true", help="clear the location")
    rm = sub.add_parser("remove", help="unregister a sensor")
    rm.add_argument("sensor_id")
    rm.add_argument("--purge", action="store_true", help="also delete its stored readings, windows and alerts")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parsed and checked arguments; argparse exits with status 2 on a malformed command line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "relabel" and args.sensor_type is None and args.location is None and not args.no_location:
        parser.error("relabel: give --type, --location or --no-location")
    if args.command == "list" and args.limit < 1:
        parser.error("list: --limit must be at least 1")
    return args


class Registry:
    """The `sensors` table and its Redis mirror, for one command."""

    def __init__(self, settings: Settings):
        cfg = settings.config
        self.conn = psycopg.connect(**conninfo(cfg.postgres, settings.secrets.postgres_password), autocommit=True)
        self.redis = redis_connect(cfg.redis, settings.secrets.redis_password)
        self.latest_prefix = cfg.redis.key_prefix + "latest:"
        self.sensors_key = cfg.redis.key_prefix + "sensors"

    def close(self) -> None:
        self.conn.close()
        self.redis.close()

    def list(self, sensor_type: str | None, match: str | None, limit: int) -> list[tuple]:
        query, params = "SELECT sensor_id, type, location, created_at FROM sensors WHERE true", []
        if sensor_type is not None:
            query, params = query + " AND type = %s", params + [sensor_type]
        if match:
            query, params = query + " AND strpos(sensor_id, %s) > 0", params + [match]
        return self.conn.execute(query + " ORDER BY sensor_id LIMIT %s", params + [limit]).fetchall()

    def get(self, sensor_id: str) -> Entry | None:
        row = self.conn.execute("SELECT sensor_id, type, location FROM sensors WHERE sensor_id = %s", (sensor_id,)).fetchone()
        return tuple(row) if row else None  # type: ignore[return-value]

    def store(self, entries: list[Entry], update: bool) -> tuple[int, int]:
        """(added, relabelled), in one statement."""
        columns = ([e[0] for e in entries], [e[1] for e in entries], [e[2] for e in entries])
        if not update:
            return len(self.conn.execute(INSERT_NEW, columns).fetchall()), 0
        rows = self.conn.execute(INSERT_OR_RELABEL, columns).fetchall()
        relabelled = [sid for sid, inserted in rows if not inserted]
        by_id = {e[0]: e for e in entries}
        self.mirror([by_id[sid] for sid in relabelled])
        return len(rows) - len(relabelled), len(relabelled)

    def relabel(self, sensor_id: str, sensor_type: str | None, location: str | None, clear_location: bool) -> Entry:
        current = self.get(sensor_id)
        if current is None:
            raise UsageError(f"{sensor_id!r} is not registered (add it first)")
        new_location = None if clear_location else (location if location is not None else current[2])
        entry = check_entry(sensor_id, sensor_type if sensor_type is not None else current[1], new_location)
        self.conn.execute("UPDATE sensors SET type = %s, location = %s WHERE sensor_id = %s", (entry[1], entry[2], sensor_id))
        self.mirror([entry])
        return entry

    def mirror(self, entries: Iterable[Entry]) -> None:
        """Type and location into the `latest:<id>` hashes that exist (a sensor without readings has none)."""
        entries = list(entries)
        if not entries:
            return
        pipe = self.redis.pipeline(transaction=False)
        for sensor_id, _, _ in entries:
            pipe.exists(self.latest_prefix + sensor_id)
        exists = pipe.execute()
        for (sensor_id, stype, location), present in zip(entries, exists):
            if present:
                pipe.hset(self.latest_prefix + sensor_id, mapping={"type": stype, "location": location or ""})
        pipe.execute()

    def stored_data(self, sensor_id: str) -> dict[str, str]:
        """Referencing table -> its sensor column, for the tables holding rows of this sensor."""
        found = {}
        for table, column in self.conn.execute(REFERENCING).fetchall():
            q = sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE {} = %s)").format(
                sql.SQL(table), sql.Identifier(column))  # table: regclass text, quoted by PostgreSQL
            if self.conn.execute(q, (sensor_id,)).fetchone()[0]:
                found[table] = column
        return found

    def remove(self, sensor_id: str, purge: bool) -> dict[str, int]:
        """Deleted rows per table (the sensor's own row under `sensors`), in one transaction."""
        if self.get(sensor_id) is None:
            raise UsageError(f"{sensor_id!r} is not registered")
        data = self.stored_data(sensor_id)
        if data and not purge:
            raise UsageError(f"{sensor_id!r} has stored rows in {', '.join(data)}; --purge deletes them too")
        deleted = {}
        with self.conn.transaction():
            for table, column in data.items():
                q = sql.SQL("DELETE FROM {} WHERE {} = %s").format(sql.SQL(table), sql.Identifier(column))
                deleted[table] = self.conn.execute(q, (sensor_id,)).rowcount
            deleted["sensors"] = self.conn.execute("DELETE FROM sensors WHERE sensor_id = %s", (sensor_id,)).rowcount
        self.redis.delete(self.latest_prefix + sensor_id)
        self.unindex(sensor_id)
        return deleted

    def unindex(self, sensor_id: str) -> None:
        """Drop the id from the Redis sensor index: a sorted set by last write; a plain set before a daemon converted it."""
        kind = self.redis.type(self.sensors_key)
        if kind in (b"zset", "zset"):
            self.redis.zrem(self.sensors_key, sensor_id)
        elif kind in (b"set", "set"):
            self.redis.srem(self.sensors_key, sensor_id)


def run(args: argparse.Namespace, registry: Registry, out=None) -> None:
    """One parsed command against `registry`; raises UsageError for what it refuses."""
    out = out or sys.stdout
    if args.command == "list":
        for sensor_id, stype, location, created in registry.list(args.sensor_type, args.match, args.limit):
            if args.json:
                out.write(orjson.dumps({"sensor_id": sensor_id, "type": stype, "location": location,
                                        "created_at": created.isoformat() if created else None}).decode() + "\n")
            else:
                out.write(f"{sensor_id:<30} {stype:<20} {location or '-'}\n")
    elif args.command == "add":
        entry = check_entry(args.sensor_id, args.sensor_type, args.location)
        if registry.store([entry], update=False)[0] == 0:
            raise UsageError(f"{args.sensor_id!r} is registered already (relabel changes its type or location)")
        out.write(f"added {args.sensor_id}\n")
    elif args.command == "import":
        text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8", newline="").read()
        entries = parse_csv(text)
        added, relabelled = registry.store(entries, args.update) if entries else (0, 0)
        out.write(f"read {len(entries)} sensor(s): added {added}, relabelled {relabelled}, "
                  f"unchanged {len(entries) - added - relabelled}\n")
    elif args.command == "relabel":
        sensor_id, stype, location = registry.relabel(args.sensor_id, args.sensor_type, args.location, args.no_location)
        out.write(f"relabelled {sensor_id}: type={stype} location={location or '-'}\n")
    elif args.command == "remove":
        deleted = registry.remove(args.sensor_id, args.purge)
        out.write(f"removed {args.sensor_id}: " + ", ".join(f"{t} {n}" for t, n in deleted.items()) + "\n")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 done, 1 refused (one line on stderr), 2 bad command line or config."""
    args = parse_args(argv)
    registry = Registry(load_for_cli(args.config))
    try:
        run(args, registry)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        registry.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
