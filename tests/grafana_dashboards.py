"""The shipped Grafana dashboards as a test reads them: their queries, and Grafana's variables and macros expanded
the way Grafana documents them, so the SQL and PromQL can run against the real PostgreSQL and Prometheus.

PostgreSQL macros (Grafana, "PostgreSQL data source", Macros): $__time, $__timeEpoch, $__timeFilter, $__timeFrom(),
$__timeTo(), $__timeGroup, $__timeGroupAlias, $__unixEpochFilter, $__unixEpochFrom(), $__unixEpochTo(),
$__unixEpochGroup, $__unixEpochGroupAlias. Global variables: $__interval, $__interval_ms, $__range_s, $__from,
$__to; Prometheus adds $__rate_interval. A single-value variable goes into SQL as its text with single quotes doubled
(the query quotes it); a multi-value one as a quoted, comma-separated list; into PromQL, a multi-value one as a
regular expression alternation, "All" as the variable's allValue.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
POSTGRES_UID = "realtime-pipeline-postgres"
PROMETHEUS_UID = "realtime-pipeline-prometheus"
DEFAULT_MAX_POINTS = 1000  # a panel without maxDataPoints: about its width in pixels

# Grafana's rangeutil.roundInterval: the raw interval (ms) rounded to a readable one.
_ROUND = ((15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000), (3500, 2000),
          (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000), (90000, 60000),
          (210000, 120000), (450000, 300000), (750000, 600000), (1050000, 900000), (1500000, 1200000),
          (2700000, 1800000), (5400000, 3600000), (9000000, 7200000), (16200000, 10800000), (32400000, 21600000),
          (86400000, 43200000), (604800000, 86400000), (1814400000, 604800000), (3628800000, 2592000000))
_UNITS = (("y", 31536000000), ("d", 86400000), ("h", 3600000), ("m", 60000), ("s", 1000), ("ms", 1))
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w|y)$")
_DURATION_MS = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000, "w": 604800000, "y": 31536000000}


def min_interval_ms(uid: str) -> int:
    """The data source's `timeInterval` (Grafana's "Min time interval": the floor of $__interval) in ms."""
    import yaml

    for path in sorted((ROOT / "deploy" / "grafana" / "provisioning" / "datasources").glob("*.yaml")):
        for ds in yaml.safe_load(path.read_text())["datasources"]:
            if ds["uid"] == uid and ds.get("jsonData", {}).get("timeInterval"):
                return int(duration_seconds(ds["jsonData"]["timeInterval"]) * 1000)
    return 0


def dashboards() -> dict[str, dict]:
    """file name -> dashboard JSON, every file of deploy/grafana/dashboards."""
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: dict):
    """Every panel, those inside rows included."""
    for p in board.get("panels", []):
        yield p
        yield from p.get("panels", [])


def _uid(ds) -> str | None:
    return ds.get("uid") if isinstance(ds, dict) else ds


def queries(board: dict, uid: str) -> list[tuple[str, dict]]:
    """(where, target) for every panel target and annotation of the data source `uid`."""
    out = []
    for p in panels(board):
        for t in p.get("targets", []):
            if _uid(t.get("datasource") or p.get("datasource")) == uid:
                out.append((f"{board['title']} / {p['title']} / {t.get('refId')}", dict(t, maxDataPoints=p.get("maxDataPoints"))))
    for a in board.get("annotations", {}).get("list", []):
        if _uid(a.get("datasource")) == uid and a.get("target"):
            out.append((f"{board['title']} / annotation {a['name']}", a["target"]))
    return out


def variables(board: dict) -> list[dict]:
    return board.get("templating", {}).get("list", [])


def round_interval_ms(raw_ms: float) -> int:
    for below, rounded in _ROUND:
        if raw_ms < below:
            return rounded
    return 31536000000


def interval_ms(start: datetime, end: datetime, max_points: int | None = None, min_ms: int = 0) -> int:
    """$__interval_ms as Grafana computes it: the range over the panel's points, rounded, at least `min_ms`."""
    raw = (end - start).total_seconds() * 1000 / (max_points or DEFAULT_MAX_POINTS)
    return max(round_interval_ms(raw), min_ms)


def interval_text(ms: int) -> str:
    """$__interval: the largest whole unit (Grafana's secondsToHms)."""
    for unit, size in _UNITS:
        if ms >= size:
            return f"{ms // size}{unit}"
    return "1ms"


def duration_seconds(text: str) -> float:
    m = _DURATION.match(text.strip().strip("'\""))
    if not m:
        raise ValueError(f"not a Grafana interval: {text!r}")
    return int(m.group(1)) * _DURATION_MS[m.group(2)] / 1000


def rfc3339(t: datetime) -> str:
    """Go's time.RFC3339Nano in UTC, as the macros write times: trailing zeros of the fraction dropped, 'Z'."""
    t = t.astimezone(timezone.utc)
    frac = f"{t.microsecond:06d}".rstrip("0")
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def _variables(text: str, values: dict[str, str]) -> str:
    """$name, ${name}, ${name:raw} and [[name]] for the names in `values`; others are left for the macros."""
    def sub(m):
        name = m.group(1) or m.group(2) or m.group(3)
        return values[name] if name in values else m.group(0)
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", sub, text)


def _macro_args(text: str, start: int) -> tuple[list[str], int]:
    """Arguments of a macro call whose '(' is at `start` (nested parentheses allowed); returns (args, end)."""
    depth, args, current = 0, [], ""
    for i in range(start, len(text)):
        c = text[i]
        if c == "(":
            depth += 1
            if depth == 1:
                continue
        elif c == ")":
            depth -= 1
            if depth == 0:
                args.append(current.strip())
                return [a for a in args if a != ""], i + 1
        elif c == "," and depth == 1:
            args.append(current.strip())
            current = ""
            continue
        current += c
    raise ValueError(f"unclosed macro call at {start}: {text[start:start + 60]!r}")


def expand_sql(sql: str, start: datetime, end: datetime, values: dict[str, str], max_points: int | None = None,
               min_interval_ms: int = 0) -> str:
    """A Grafana PostgreSQL query as the server runs it: variables first (Grafana's frontend), then the macros
    (its backend). `values` maps variable names to what goes in (see `sql_value`)."""
    iv = interval_ms(start, end, max_points, min_interval_ms)
    f_s, t_s = int(start.timestamp()), int(end.timestamp())
    text = _variables(sql, {**values, "__interval": interval_text(iv), "__interval_ms": str(iv),
                            "__range_s": str(t_s - f_s), "__from": str(int(start.timestamp() * 1000)),
                            "__to": str(int(end.timestamp() * 1000))})
    f_txt, t_txt = rfc3339(start), rfc3339(end)

    def group(args: list[str], epoch: bool) -> str:
        seconds = duration_seconds(args[1])
        n = f"{seconds:g}"
        return f"floor({args[0]}/{n})*{n}" if epoch else f"floor(extract(epoch from {args[0]})/{n})*{n}"

    macros = {
        "time": lambda a: f'{a[0]} AS "time"',
        "timeEpoch": lambda a: f'extract(epoch from {a[0]}) as "time"',
        "timeFilter": lambda a: f"{a[0]} BETWEEN '{f_txt}' AND '{t_txt}'",
        "timeFrom": lambda a: f"'{f_txt}'",
        "timeTo": lambda a: f"'{t_txt}'",
        "timeGroup": lambda a: group(a, False),
        "timeGroupAlias": lambda a: group(a, False) + ' AS "time"',
        "unixEpochFilter": lambda a: f"{a[0]} >= {f_s} AND {a[0]} <= {t_s}",
        "unixEpochFrom": lambda a: str(f_s),
        "unixEpochTo": lambda a: str(t_s),
        "unixEpochGroup": lambda a: group(a, True),
        "unixEpochGroupAlias": lambda a: group(a, True) + ' AS "time"',
    }
    out, pos = [], 0
    for m in re.finditer(r"\$__(\w+)\(", text):
        if m.start() < pos:
            continue
        name = m.group(1)
        if name not in macros:
            raise ValueError(f"unknown macro $__{name}")
        args, end_at = _macro_args(text, m.end() - 1)
        out.append(text[pos:m.start()])
        out.append(macros[name](args))
        pos = end_at
    out.append(text[pos:])
    result = "".join(out)
    left = re.findall(r"\$\{?\w+|\[\[\w+\]\]", result)
    if left:
        raise ValueError(f"not expanded: {left}")
    return result


def sql_value(value: str, multi: bool = False, values: list[str] | None = None) -> str:
    """What a variable puts into SQL: its text with ' doubled; multi-value: 'a','b'."""
    if multi:
        return ",".join("'" + v.replace("'", "''") + "'" for v in (values or [value]))
    return value.replace("'", "''")


def rate_interval(interval_ms_: int, scrape_s: float) -> str:
    """$__rate_interval: max($__interval + scrape interval, 4 x scrape interval) (Grafana, Prometheus data source)."""
    ms = max(interval_ms_ + int(scrape_s * 1000), int(4 * scrape_s * 1000))
    return f"{ms}ms"


def expand_promql(expr: str, values: dict[str, str], interval_ms_: int, scrape_s: float, range_s: int) -> str:
    text = _variables(expr, {**values, "__interval": f"{interval_ms_}ms", "__interval_ms": str(interval_ms_),
                             "__rate_interval": rate_interval(interval_ms_, scrape_s), "__range": f"{range_s}s",
                             "__range_s": str(range_s)})
    left = re.findall(r"\$\{?\w+|\[\[\w+\]\]", text)
    if left:
        raise ValueError(f"not expanded in {expr!r}: {left}")
    return text


def prom_value(variable: dict, chosen: list[str] | None) -> str:
    """A Prometheus variable's value in PromQL: "All" (None) is its allValue (or every value as an alternation)."""
    if chosen is None:
        return variable.get("allValue") or "(" + "|".join(re.escape(v) for v in variable["_values"]) + ")"
    if len(chosen) == 1:
        return re.escape(chosen[0])
    return "(" + "|".join(re.escape(v) for v in chosen) + ")"


_COMPARISON = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*(bool\s+)?-?[0-9.]+(e[+-]?[0-9]+)?\s*$")


def _top_level_split(expr: str, word: str) -> list[str]:
    parts, depth, start, i = [], 0, 0, 0
    pattern = re.compile(rf"\s{word}\s", re.IGNORECASE)
    while i < len(expr):
        c = expr[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            m = pattern.match(expr, i)
            if m:
                parts.append(expr[start:i])
                start = i = m.end()
                continue
        i += 1
    parts.append(expr[start:])
    return [p.strip() for p in parts]


def rule_measures(expr: str) -> list[str]:
    """The expressions a rule compares, without its thresholds: `a > 1 and b > 0` -> [a, b]; absent(x) -> [x]."""
    out = []
    for part in _top_level_split(" ".join(expr.split()), "and"):
        part = _COMPARISON.sub("", part).strip()
        m = re.fullmatch(r"absent\((.*)\)", part)
        out.append(m.group(1) if m else part)
    return out


def exported_metric_names() -> set[str]:
    """Every series name the pipeline's registry can export (counters as <name>_total, histograms as _bucket,
    _sum and _count), labelled metrics without children included."""
    from prometheus_client import CollectorRegistry

    from pipeline.observability.metrics import Metrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    return {m.name + suffix for m in Metrics(CollectorRegistry()).registry.collect()
            for suffix in suffixes.get(m.type, ("",))}
