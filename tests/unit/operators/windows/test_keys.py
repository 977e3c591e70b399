"""A window's pending keys held per sensor: an ordered set of (sensor, metric) without a tuple per series."""
from pipeline.operators.windows.keys import PendingKeys


def test_keys_are_a_set_in_sensor_order_with_a_count():
    k = PendingKeys()
    assert k.add("a", "t") and k.add("b", "t") and k.add("a", "h")
    assert not k.add("a", "t")  # held already
    assert list(k) == [("a", "t"), ("a", "h"), ("b", "t")] and len(k) == 3 and bool(k)
    assert ("a", "h") in k and ("b", "h") not in k and ("c", "t") not in k
    assert k.first(2) == frozenset({("a", "t"), ("a", "h")}) and k.first(10) == frozenset(k)


def test_discard_drops_a_sensor_with_its_last_metric_and_ignores_unknown_keys():
    k = PendingKeys([("a", "t"), ("a", "h"), ("b", "t")])
    k.discard("a", "t")
    k.discard("a", "x")
    k.discard("z", "t")
    assert list(k) == [("a", "h"), ("b", "t")] and len(k) == 2
    k.discard("a", "h")
    k.discard("b", "t")
    assert k.by_sensor == {} and len(k) == 0 and not k


def test_a_copy_holds_the_same_keys_in_new_containers_and_shares_one_string_per_name():
    sensor = "".join(["sen", "sor-1"])  # a string of its own, as a row read back from PostgreSQL
    k = PendingKeys([(sensor, "t"), ("sensor-1", "h")])
    assert len(k.by_sensor) == 1  # equal ids are one sensor
    c = k.copy()
    assert list(c) == list(k) and len(c) == 2
    assert c.by_sensor is not k.by_sensor and c.by_sensor["sensor-1"] is not k.by_sensor["sensor-1"]
    c.discard("sensor-1", "t")
    assert len(k) == 2 and len(c) == 1  # independent
