"""Registration policy in the limit filter: reserved ids and types, known-only registration, and the registry's
type and location winning over what a reading claims."""
import threading

import pytest

from pipeline.config import ConfigError, parse
from pipeline.operators.limits.refresh import RegistryRefresh
from pipeline.stages.limits import LimitFilter, READ_REGISTERED, reserved_reason
from pipeline.records import INVALID
from tests.unit.helpers import NOW, chain, raw, run


def limits_of(ch) -> LimitFilter:
    return next(s for s in ch.stages if isinstance(s, LimitFilter))


@pytest.mark.parametrize("sensor_id, sensor_type, reason", [
    ("app:pipeline", "env", "reserved_sensor_id"),
    ("broker:localhost", None, "reserved_sensor_id"),
    ("App:pipeline", None, "reserved_sensor_id"),
    ("BROKER:x", None, "reserved_sensor_id"),
    ("dev-1", "app", "reserved_sensor_type"),
    ("dev-1", "Broker", "reserved_sensor_type"),
    ("dev-1", "env", None),
    ("apple:1", "application", None),
    ("my-app:1", "brokerage", None),
])
def test_reserved_ids_and_types_are_named(sensor_id, sensor_type, reason):
    assert reserved_reason(sensor_id, sensor_type) == reason


def test_a_published_reading_with_a_reserved_id_or_type_is_one_dead_letter_with_its_reason():
    ch, metrics = chain()
    out, dead = run(ch, raw("sensors/app:pipeline", {"readings": {"log_error": 1, "log_info": 2}}, offset=3))
    assert out == [] and len(dead) == 1
    assert (dead[0].reason, dead[0].stage, dead[0].kind, dead[0].source.offset) == ("reserved_sensor_id", "limits", INVALID, 3)
    assert dead[0].refused == {"log_error": "reserved_sensor_id", "log_info": "reserved_sensor_id"}
    out, dead = run(ch, raw("sensors/broker:mosquitto/mqtt_dropped", "5"))
    assert out == [] and dead[0].reason == "reserved_sensor_id"
    out, dead = run(ch, raw("sensors/dev-1", {"metric": "t", "value": 1, "type": "broker"}))
    assert out == [] and dead[0].reason == "reserved_sensor_type"
    sample = metrics.registry.get_sample_value
    assert sample("pipeline_invalid_records_total", {"stage": "limits", "reason": "reserved_sensor_id"}) == 3
    assert sample("pipeline_invalid_records_total", {"stage": "limits", "reason": "reserved_sensor_type"}) == 1
    assert len(limits_of(ch).registry) == 0  # refused ids use up nothing


def test_known_mode_refuses_unregistered_ids_and_accepts_registered_ones_with_their_labels():
    ch, metrics = chain({"limits": {"registration": "known"}})
    limits = limits_of(ch)
    limits.use({"dev-1": ("boiler", "cellar")})
    out, dead = run(ch, raw("sensors/dev-2", {"readings": {"t": 1, "h": 2}}, offset=9))
    assert out == [] and len(dead) == 1 and dead[0].reason == "unknown_sensor" and dead[0].source.offset == 9
    out, dead = run(ch, raw("sensors/dev-1", {"metric": "t", "value": 1, "type": "fake", "location": "roof"}))
    assert dead == [] and [(r.sensor_type, r.location) for r in out] == [("boiler", "cellar")]
    assert metrics.registry.get_sample_value("pipeline_invalid_records_total",
                                             {"stage": "limits", "reason": "unknown_sensor"}) == 2


def test_known_mode_learns_sensors_added_and_removed_from_an_offered_snapshot():
    ch, _ = chain({"limits": {"registration": "known"}})
    limits = limits_of(ch)
    limits.use({"dev-1": ("env", None)})
    assert run(ch, raw("sensors/dev-2/t", "1"))[1][0].reason == "unknown_sensor"
    limits.offer({"dev-2": ("env", "hall")})  # dev-2 added, dev-1 removed
    out, dead = run(ch, raw("sensors/dev-2/t", "1"))
    assert dead == [] and out[0].location == "hall"
    assert run(ch, raw("sensors/dev-1/t", "1"))[1][0].reason == "unknown_sensor"


def test_open_mode_first_reading_fills_in_the_registration_later_ones_do_not_relabel():
    ch, _ = chain()
    out, _ = run(ch, raw("sensors/dev-1", {"metric": "t", "value": 1, "type": "boiler", "location": "cellar"}))
    assert (out[0].sensor_type, out[0].location) == ("boiler", "cellar")
    out, dead = run(ch, raw("sensors/dev-1", {"metric": "t", "value": 2, "type": "hijack", "location": "elsewhere"}))
    assert dead == [] and (out[0].sensor_type, out[0].location, out[0].value) == ("boiler", "cellar", 2.0)
    out, _ = run(ch, raw("sensors/dev-1/t", "3"))  # no type given: the default would relabel it, the registry holds
    assert (out[0].sensor_type, out[0].location) == ("boiler", "cellar")


def test_open_mode_takes_relabels_from_the_table_and_keeps_sensors_it_registered_meanwhile():
    ch, _ = chain()
    limits = limits_of(ch)
    run(ch, raw("sensors/new-1", {"metric": "t", "value": 1, "type": "a"}))
    limits.offer({"dev-1": ("pump", "well")})  # read before new-1 was committed
    out, _ = run(ch, raw("sensors/dev-1", {"metric": "t", "value": 1, "type": "x", "location": "y"}))
    assert (out[0].sensor_type, out[0].location) == ("pump", "well")
    assert limits.labels["new-1"] == ("a", None)


def test_a_refused_new_sensor_is_not_registered():
    ch, _ = chain({"limits": {"max_sensors": 1}})
    run(ch, raw("sensors/a/t", "1"))
    assert run(ch, raw("sensors/b/t", "1"))[1][0].reason == "too_many_sensors"
    assert "b" not in limits_of(ch).labels


def test_registration_is_validated_with_the_key_named():
    assert parse({"limits": {"registration": "known"}}, {}).limits.registration == "known"
    assert parse({}, {}).limits.registration == "open"
    with pytest.raises(ConfigError, match="limits.registration"):
        parse({"limits": {"registration": "closed"}}, {})
    assert parse({}, {}).limits.registry_lookups_per_s == 1000
    with pytest.raises(ConfigError, match="limits.registry_lookups_per_s"):
        parse({"limits": {"registry_lookups_per_s": -1}}, {})


class FakeConn:
    def __init__(self, rows, fail=False):
        self.rows, self.fail, self.queries = rows, fail, []

    def execute(self, sql, params):
        if self.fail:
            import psycopg
            raise psycopg.OperationalError("down")
        self.queries.append((sql, params))
        return iter(self.rows)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_refresh_reads_the_table_bounded_and_offers_it_and_survives_a_failed_read():
    limits = LimitFilter(10, 5, "known")
    conns = [FakeConn([("dev-1", "env", "hall")]), FakeConn([], fail=True)]
    refresh = RegistryRefresh(lambda: conns.pop(0), limits, 0.01)
    assert refresh.run_once() == 1 and limits._offered == ({"dev-1": ("env", "hall")}, True, {})
    stop = threading.Event()
    conns.append(FakeConn([]))
    t = threading.Thread(target=refresh.run, args=(stop,))
    t.start()
    while conns:
        stop.wait(0.01)
    stop.set()
    t.join(2)
    assert refresh.failures == 1 and not t.is_alive()


class Table:
    """The `sensors` table behind a lookup: counts the ids asked for."""

    def __init__(self, rows):
        self.rows, self.asked = rows, []

    def __call__(self, ids):
        self.asked.extend(ids)
        return {i: self.rows[i] for i in ids if i in self.rows}


def over_the_limit(mode, lookups_per_s=1000.0):
    """max_sensors 2, a table of 4 registered sensors: the table read holds the first two only."""
    ch, _ = chain({"limits": {"registration": mode, "max_sensors": 2, "registry_lookups_per_s": lookups_per_s}})
    limits = limits_of(ch)
    table = Table({f"dev-{i}": ("boiler", f"hall-{i}") for i in range(4)})
    limits.lookup = table
    limits.use({"dev-0": ("boiler", "hall-0"), "dev-1": ("boiler", "hall-1")}, complete=False)
    return ch, limits, table


@pytest.mark.parametrize("mode", ["known", "open"])
def test_a_registered_sensor_past_the_table_read_is_looked_up_and_keeps_acceptance_and_labels(mode):
    ch, limits, table = over_the_limit(mode)
    out, dead = run(ch, raw("sensors/dev-3", {"metric": "t", "value": 1, "type": "rogue", "location": "roof"}))
    assert dead == [] and [(r.sensor_type, r.location) for r in out] == [("boiler", "hall-3")]
    run(ch, raw("sensors/dev-3/t", "2"))
    assert table.asked == ["dev-3"]  # once: held while active
    assert limits.extra_ids == ()  # reread from the next snapshot on
    limits.offer({"dev-0": ("boiler", "hall-0"), "dev-1": ("boiler", "hall-1")}, False, {"dev-3": ("pump", "well")})
    out, _ = run(ch, raw("sensors/dev-3/t", "3"))
    assert (out[0].sensor_type, out[0].location) == ("pump", "well") and limits.extra_ids == ("dev-3",)


def test_known_mode_an_id_absent_from_the_table_is_asked_once_per_snapshot_and_refused():
    ch, limits, table = over_the_limit("known")
    for _ in range(3):
        assert run(ch, raw("sensors/intruder/t", "1"))[1][0].reason == "unknown_sensor"
    assert table.asked == ["intruder"]
    limits.offer({"dev-0": ("boiler", "hall-0")}, False, {})
    assert run(ch, raw("sensors/intruder/t", "1"))[1][0].reason == "unknown_sensor"
    assert table.asked == ["intruder", "intruder"]


def test_lookups_are_bounded_per_second_and_a_table_read_whole_needs_none():
    ch, limits, table = over_the_limit("known", lookups_per_s=2)
    for i in range(5):
        run(ch, raw(f"sensors/x-{i}/t", "1", received_at=NOW))
    assert len(table.asked) == 2 and limits.lookups_skipped == 3
    run(ch, raw("sensors/dev-2/t", "1", received_at=NOW + 1.5))  # the next second: asked, accepted
    assert table.asked[-1] == "dev-2" and "dev-2" in limits.registry
    limits.use({"dev-0": ("boiler", "hall-0")})  # complete: the whole table
    assert run(ch, raw("sensors/dev-3/t", "1", received_at=NOW + 3))[1][0].reason == "unknown_sensor"
    assert table.asked[-1] == "dev-2"  # not asked


def test_a_failed_lookup_is_handled_as_absent_and_not_remembered():
    ch, limits, _ = over_the_limit("known")

    def down(ids):
        raise OSError("connection refused")
    limits.lookup = down
    assert run(ch, raw("sensors/dev-3/t", "1"))[1][0].reason == "unknown_sensor"
    limits.lookup = Table({"dev-3": ("boiler", None)})
    assert run(ch, raw("sensors/dev-3/t", "1"))[1] == []


def test_refresh_rereads_the_sensors_held_past_the_table_read():
    limits = LimitFilter(2, 5, "known")
    limits.use({"a": ("env", None), "b": ("env", None)}, complete=False)
    limits.labels["z"] = ("env", "roof")
    limits.registry.admit("z", "t", 0.0)
    limits.use({"a": ("env", None), "b": ("env", None)}, False, {"z": ("env", "roof")})
    assert limits.extra_ids == ("z",)
    conn = FakeConn([("a", "env", None), ("b", "env", None)])
    RegistryRefresh(lambda: conn, limits, 10).run_once()
    assert [p for _, p in conn.queries] == [(2,), (["z"],)]
    assert limits._offered[1] is False
