"""The sensor and metric limits: the registry, the stage in the chain, and loading what is stored."""
from datetime import datetime

from pipeline.stages.limits import LimitFilter, SensorRegistry, load_known
from pipeline.records import INVALID
from tests.unit.helpers import chain, raw, run


def test_new_sensors_beyond_the_limit_are_refused_known_ones_still_pass():
    reg = SensorRegistry(max_sensors=2, max_metrics_per_sensor=5)
    assert [reg.admit(s, "t") for s in ("a", "b", "c")] == [None, None, "too_many_sensors"]
    assert reg.admit("a", "t") is None and reg.admit("b", "h") is None
    assert len(reg) == 2 and reg.metrics_of("c") == ()


def test_new_metrics_beyond_the_limit_are_refused_per_sensor():
    reg = SensorRegistry(max_sensors=10, max_metrics_per_sensor=2)
    assert [reg.admit("a", m) for m in ("t", "h", "p", "t")] == [None, None, "too_many_metrics", None]
    assert reg.admit("b", "p") is None  # another sensor has its own allowance
    assert reg.metrics_of("a") == ("t", "h")


def test_memory_is_bounded_by_the_limits_whatever_is_published():
    reg = SensorRegistry(max_sensors=100, max_metrics_per_sensor=3)
    for i in range(10_000):
        reg.admit(f"s{i % 500}", f"m{i}")
    assert len(reg) == 100 and all(len(reg.metrics_of(f"s{i}")) == 3 for i in range(100))


def test_preload_counts_stored_sensors_and_metrics_and_stops_at_the_limits():
    reg = SensorRegistry(max_sensors=3, max_metrics_per_sensor=2)
    reg.preload(["a", "b"], [("a", "t"), ("a", "h"), ("a", "p"), ("x", "t"), ("y", "t")])
    assert (len(reg), reg.metrics_of("a"), reg.metrics_of("b"), reg.metrics_of("x")) == (3, ("t", "h"), (), ("t",))
    assert reg.admit("a", "p") == "too_many_metrics" and reg.admit("z", "t") == "too_many_sensors"
    assert reg.admit("b", "t") is None and reg.admit("y", "t") == "too_many_sensors"


class FakeConn:
    def __init__(self, sensors, pairs):
        self.rows = {"sensors": [(s, "env", None) for s in sensors], "aggregations": pairs}
        self.queries = []

    def execute(self, sql, params):
        self.queries.append((sql, params))
        rows = self.rows["sensors" if "FROM sensors" in sql else "aggregations"]
        return Cursor(rows[:params[-1]])


class Cursor(list):
    def fetchall(self):
        return list(self)


def test_load_known_reads_sensors_and_recent_windows_with_bounded_queries():
    reg = SensorRegistry(max_sensors=10, max_metrics_per_sensor=4)
    conn = FakeConn(["a", "b"], [("a", "t"), ("c", "h")])
    load_known(conn, reg, "1h", 7200, now=datetime(2026, 1, 1, 12))
    assert (len(reg), reg.metrics_of("a"), reg.metrics_of("c")) == (3, ("t",), ("h",))
    (_, p1), (sql2, p2) = conn.queries
    assert p1 == (10,) and "period = %s" in sql2 and p2 == ("1h", datetime(2026, 1, 1, 10), 40)


def test_load_known_without_aggregation_reads_only_sensors():
    reg = SensorRegistry(max_sensors=10, max_metrics_per_sensor=4)
    conn = FakeConn(["a"], [("a", "t")])
    load_known(conn, reg, None, 7200)
    assert len(conn.queries) == 1 and reg.metrics_of("a") == ()


def test_in_the_chain_refusals_are_dead_letters_with_their_reasons_and_counted():
    ch, metrics = chain({"limits": {"max_sensors": 2, "max_metrics_per_sensor": 2}})
    assert len(run(ch, raw("sensors/a", {"readings": {"t": 1, "h": 2}}))[0]) == 2
    out, dead = run(ch, raw("sensors/a", {"readings": {"t": 1, "p": 3}}, offset=7))
    assert [r.metric for r in out] == ["t"]
    [letter] = dead
    assert (letter.reason, letter.stage, letter.kind, letter.metric, letter.source.offset) == (
        "too_many_metrics", "limits", INVALID, "p", 7)
    run(ch, raw("sensors/b/t", "1"))
    out, dead = run(ch, raw("sensors/c", {"readings": {"t": 1, "h": 2}}))
    assert out == [] and len(dead) == 1 and dead[0].reason == "too_many_sensors"  # one letter per message
    assert dead[0].refused == {"t": "too_many_sensors", "h": "too_many_sensors"}
    sample = metrics.registry.get_sample_value
    assert sample("pipeline_invalid_records_total", {"stage": "limits", "reason": "too_many_metrics"}) == 1
    assert sample("pipeline_invalid_records_total", {"stage": "limits", "reason": "too_many_sensors"}) == 2


def test_invalid_readings_do_not_use_up_the_limits():
    ch, _ = chain({"limits": {"max_sensors": 1}})
    run(ch, raw("sensors/a/t", "not a number"))
    run(ch, raw("sensors/b", {"metric": "t", "value": 1, "timestamp": 1.0}))  # too old: refused before the limits
    assert len(run(ch, raw("sensors/c/t", "1"))[0]) == 1
    limits = next(s for s in ch.stages if isinstance(s, LimitFilter))
    assert len(limits.registry) == 1


def test_log_records_pass_the_filter():
    ch, _ = chain({"limits": {"max_sensors": 1}})
    run(ch, raw("sensors/a/t", "1"))
    assert len(run(ch, raw("logs/app", {"level": "INFO", "message": "m"}))[0]) == 1


class TableConn(FakeConn):
    """FakeConn that also answers `sensor_id = ANY(%s)`."""

    def execute(self, sql, params):
        if "ANY" in sql:
            self.queries.append((sql, params))
            return Cursor(r for r in self.rows["sensors"] if r[0] in params[0])
        return super().execute(sql, params)


def test_a_table_larger_than_the_limit_counts_the_recently_active_sensors_not_its_first_ids():
    limits = LimitFilter(max_sensors=2, max_metrics_per_sensor=4, registration="known")
    conn = TableConn(["a", "b", "c", "d"], [("d", "t")])  # d: the one with recent windows
    load_known(conn, limits.registry, "1h", 7200, now=datetime(2026, 1, 1, 12), limits=limits)
    assert len(limits.registry) == 1 and limits.registry.metrics_of("d") == ("t",)
    assert not limits.complete and set(limits.labels) == {"a", "b", "d"} and limits.extra_ids == ("d",)
    assert conn.queries[-1][1] == (["d"],)
    # the table fits: every id counts, as before
    whole = LimitFilter(max_sensors=10, max_metrics_per_sensor=4, registration="known")
    load_known(TableConn(["a", "b"], []), whole.registry, None, 0, limits=whole)
    assert len(whole.registry) == 2 and whole.complete
