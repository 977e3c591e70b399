"""Partition ownership bookkeeping and the sensor -> partition guess (librdkafka consistent_random = CRC32)."""
import zlib

from pipeline.runtime.ownership import Ownership, sensor_partition


def test_first_assignment_keeps_what_start_loaded_and_drops_the_rest():
    o = Ownership()
    assert o.owns(3)  # before any assignment: a single instance owns everything
    assert o.assign({0, 1}) == (None, set())
    assert o.owns(1) and not o.owns(2)


def test_eager_rebalance_drops_then_reloads():
    o = Ownership()
    o.assign({0, 1, 2, 3})
    assert o.revoke({0, 1, 2, 3}) == {0, 1, 2, 3}
    assert o.assign({0, 1}) == (set(), {0, 1})
    assert o.revoke({1, 7}) == {1}
    assert o.assign({0, 2}) == (set(), {2})
    assert o.assign({2}) == ({0}, set())


def test_sensor_partition_is_crc32_of_the_key():
    assert sensor_partition("hall-a", 4) == zlib.crc32(b"hall-a") % 4
    assert {sensor_partition(f"dev-{i}", 4) for i in range(50)} == {0, 1, 2, 3}
