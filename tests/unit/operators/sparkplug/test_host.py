"""The Sparkplug B host application's state machine (pipeline/operators/sparkplug/host.py): births, aliases, seq,
deaths and rebirth requests, with payloads built by the generated protobuf module."""
import pytest

from pipeline.operators.sparkplug.codec import SparkplugMessage
from pipeline.operators.sparkplug.host import Host
from tests.unit.operators.sparkplug.spb import (T0, dbirth, ddata, message, nbirth, ndeath, payload)
from pipeline.operators.sparkplug.proto import DataType

N = "spBv1.0/Plant 1/{}/Line-4"
D = "spBv1.0/Plant 1/{}/Line-4/Boiler"


class Run:
    """Feeds messages at increasing offsets, as one Kafka partition would."""

    def __init__(self, host=None):
        self.host = host or Host(rebirth_interval_s=10.0)
        self.offset = 0

    def __call__(self, topic: str, data: bytes, now: float = 100.0):
        self.offset += 1
        (m,) = message(topic, data, self.offset)
        assert isinstance(m, SparkplugMessage)
        return self.host.handle(m, now)


def values(outcome):
    return {(c.sensor_id, c.metric): c.value for c in outcome.readings}


def test_birth_then_data_by_alias_then_death_then_rebirth():
    run = Run()
    born = run(N.format("NBIRTH"), nbirth(bd_seq=3, seq=0))
    assert born.births and born.births[0].bd_seq == 3 and not born.rebirth
    dev = run(D.format("DBIRTH"), dbirth(seq=1))
    assert values(dev) == {("Plant_1_Line-4_Boiler", "inputs_temperature"): 21.5,
                           ("Plant_1_Line-4_Boiler", "outputs_pump"): 1.0}
    assert dev.skipped == {"string": 1}  # Properties/Model is text: skipped and counted
    data = run(D.format("DDATA"), ddata(seq=2, temp=22.25))
    assert values(data) == {("Plant_1_Line-4_Boiler", "inputs_temperature"): 22.25}
    assert data.readings[0].timestamp == (T0 + 1000) / 1000  # the metric's own timestamp (ms) is used
    assert not data.rebirth
    dead = run(N.format("NDEATH"), ndeath(bd_seq=3))
    assert dead.offline_ids == ["Plant_1_Line-4", "Plant_1_Line-4_Boiler"]  # the node and every device, at once
    after = run(D.format("DDATA"), ddata(seq=3, temp=23.0))
    assert after.refused == "sparkplug_before_birth" and after.rebirth == "before_birth" and not after.readings
    again = run(N.format("NBIRTH"), nbirth(bd_seq=4, seq=0))
    assert not again.refused and again.births[0].bd_seq == 4
    # The device born before the node's new birth is not valid any more: its data asks for a rebirth.
    stale = run(D.format("DDATA"), ddata(seq=1, temp=23.0), now=200.0)
    assert stale.refused == "sparkplug_before_birth" and stale.rebirth_sent


def test_a_gap_in_seq_asks_for_a_rebirth_and_255_wraps_to_0():
    run = Run()
    run(N.format("NBIRTH"), nbirth(seq=0))
    run(D.format("DBIRTH"), dbirth(seq=1))
    seq = 2
    for _ in range(254):  # 2 .. 255
        assert not run(D.format("DDATA"), ddata(seq=seq, temp=1.0)).rebirth
        seq += 1
    wrapped = run(D.format("DDATA"), ddata(seq=0, temp=1.0))
    assert not wrapped.rebirth, "255 -> 0 is the wrap, not a gap"
    gap = run(D.format("DDATA"), ddata(seq=5, temp=2.0))
    assert gap.rebirth == "seq_gap" and gap.rebirth_sent
    assert values(gap) == {("Plant_1_Line-4_Boiler", "inputs_temperature"): 2.0}  # its data still stored


def test_unknown_alias_skipped_counted_and_asks_for_a_rebirth():
    run = Run()
    run(N.format("NBIRTH"), nbirth(seq=0))
    run(D.format("DBIRTH"), dbirth(seq=1))
    out = run(D.format("DDATA"), payload([dict(alias=1, float_value=5.0), dict(alias=99, float_value=6.0)], seq=2))
    assert values(out) == {("Plant_1_Line-4_Boiler", "inputs_temperature"): 5.0}
    assert out.skipped == {"unknown_alias": 1} and out.rebirth == "unknown_alias" and out.rebirth_sent


def test_data_before_any_birth_is_refused_and_asks_for_a_rebirth():
    run = Run()
    out = run(N.format("NDATA"), payload([dict(alias=1, float_value=5.0)], seq=7))
    assert out.refused == "sparkplug_before_birth" and out.rebirth == "before_birth" and out.rebirth_sent
    dev = run(D.format("DDATA"), ddata(seq=8, temp=1.0))
    assert dev.refused == "sparkplug_before_birth"


def test_ndeath_with_another_sessions_bdseq_is_ignored():
    run = Run()
    run(N.format("NBIRTH"), nbirth(bd_seq=5, seq=0))
    run(D.format("DBIRTH"), dbirth(seq=1))
    late = run(N.format("NDEATH"), ndeath(bd_seq=4))  # the will of the connection before, delivered late
    assert late.offline_ids == [] and late.skipped == {"stale_death": 1}
    assert values(run(D.format("DDATA"), ddata(seq=2, temp=3.0)))  # still alive


def test_ddeath_marks_only_its_device_offline():
    run = Run()
    run(N.format("NBIRTH"), nbirth(seq=0))
    run(D.format("DBIRTH"), dbirth(seq=1))
    out = run(D.format("DDEATH"), payload([], seq=2))
    assert out.offline_ids == ["Plant_1_Line-4_Boiler"]
    assert values(run(N.format("NDATA"), payload([dict(name="bdSeq", long_value=0)], seq=3))) == {}
    assert run(D.format("DDATA"), ddata(seq=4, temp=1.0)).refused == "sparkplug_before_birth"


def test_rebirth_requests_are_rate_limited_per_node():
    run = Run(Host(rebirth_interval_s=10.0))
    first = run(N.format("NDATA"), payload([], seq=1), now=100.0)
    soon = run(N.format("NDATA"), payload([], seq=2), now=105.0)
    other = run("spBv1.0/Plant 1/NDATA/Line-5", payload([], seq=1), now=105.0)
    later = run(N.format("NDATA"), payload([], seq=3), now=110.5)
    assert first.rebirth_sent and not soon.rebirth_sent and soon.rebirth == "before_birth"
    assert other.rebirth_sent, "another node has its own limit"
    assert later.rebirth_sent


def test_a_message_read_again_resolves_by_the_birth_before_it():
    """After a restart Kafka redelivers from the last commit: data read again is resolved by the birth that
    preceded it, not by a later birth that changed the aliases."""
    host = Host()
    run = Run(host)
    run(N.format("NBIRTH"), nbirth(seq=0))                                   # offset 1
    run(D.format("DBIRTH"), dbirth(seq=1, alias_temp=1, alias_on=2))         # offset 2
    (old_data,) = message(D.format("DDATA"), ddata(seq=2, temp=7.0, alias=1), 3)
    run.offset = 3
    run(D.format("DBIRTH"), dbirth(seq=3, alias_temp=2, alias_on=1))         # offset 4: aliases swapped
    again = host.handle(old_data, 100.0)
    assert values(again) == {("Plant_1_Line-4_Boiler", "inputs_temperature"): 7.0}


@pytest.mark.parametrize("datatype, field, raw, expected", [
    (DataType.Int8, "int_value", (1 << 32) - 5, -5.0),  # two's complement in a uint32
    (DataType.Int32, "int_value", 7, 7.0),
    (DataType.Int64, "long_value", (1 << 64) - 1, -1.0),
    (DataType.UInt64, "long_value", 1 << 40, float(1 << 40)),
    (DataType.Double, "double_value", 2.5, 2.5),
    (DataType.Boolean, "boolean_value", False, 0.0),
])
def test_numeric_datatypes_become_numbers(datatype, field, raw, expected):
    run = Run()
    out = run(N.format("NBIRTH"), nbirth(seq=0, extra=[dict(name="V", alias=9, datatype=datatype, **{field: raw})]))
    assert values(out) == {("Plant_1_Line-4", "v"): expected}


def test_datasets_templates_arrays_and_bytes_are_skipped_and_counted():
    run = Run()
    p = payload([dict(name="bdSeq", datatype=DataType.UInt64, long_value=0),
                 dict(name="Table", datatype=DataType.DataSet, dataset_value=dict(num_of_columns=1, columns=["a"])),
                 dict(name="Tpl", datatype=DataType.Template, template_value=dict(version="1")),
                 dict(name="Arr", datatype=DataType.FloatArray, bytes_value=b"\0\0\0\0"),
                 dict(name="Blob", datatype=DataType.Bytes, bytes_value=b"x"),
                 dict(name="Ok", datatype=DataType.Float, float_value=1.0)], seq=0)
    out = run(N.format("NBIRTH"), p)
    assert values(out) == {("Plant_1_Line-4", "ok"): 1.0}
    assert out.skipped == {"dataset": 1, "template": 1, "array": 1, "bytes": 1}
