"""Sparkplug B payloads for the tests, built with the generated module as the specification's examples show them
(Sparkplug 3.0.0, 6.4.x "Payloads": NBIRTH with bdSeq and Node Control/Rebirth, DBIRTH with names, aliases and
datatypes, DDATA by alias only, NDEATH with the bdSeq of its NBIRTH)."""
from __future__ import annotations

from pipeline.operators.sparkplug.codec import decode
from pipeline.operators.sparkplug.proto import DataType, Payload
from pipeline.records import RawMessage
from pipeline.registry.formats import Limits

T0 = 1_700_000_000_000  # ms


def payload(metrics: list[dict], seq: int | None = None, ts: int = T0) -> bytes:
    p = Payload(timestamp=ts)
    if seq is not None:
        p.seq = seq
    for m in metrics:
        p.metrics.add(**m)
    return p.SerializeToString()


def nbirth(bd_seq: int = 0, seq: int = 0, extra: list[dict] | None = None) -> bytes:
    return payload([dict(name="bdSeq", datatype=DataType.UInt64, long_value=bd_seq),
                    dict(name="Node Control/Rebirth", datatype=DataType.Boolean, boolean_value=False),
                    *(extra or [])], seq=seq)


def ndeath(bd_seq: int = 0) -> bytes:
    return payload([dict(name="bdSeq", datatype=DataType.UInt64, long_value=bd_seq)])


def dbirth(seq: int, temp: float = 21.5, alias_temp: int = 1, alias_on: int = 2) -> bytes:
    return payload([dict(name="Inputs/Temperature", alias=alias_temp, datatype=DataType.Float, float_value=temp),
                    dict(name="Outputs/Pump", alias=alias_on, datatype=DataType.Boolean, boolean_value=True),
                    dict(name="Properties/Model", datatype=DataType.String, string_value="PLC-9")], seq=seq)


def ddata(seq: int, temp: float, alias: int = 1, ts: int = T0 + 1000) -> bytes:
    return payload([dict(alias=alias, timestamp=ts, float_value=temp)], seq=seq)


def message(topic: str, data: bytes, offset: int, partition: int = 0):
    raw = RawMessage(topic, data, 1_700_000_000.0, topic=topic, partition=partition, offset=offset)
    levels = dict(zip(("group_id", "message_type", "edge_node_id"), topic.split("/")[1:4]))
    return decode(raw, levels, Limits())
