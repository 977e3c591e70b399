"""Sparkplug B on the wire: the topic namespace, the payload parsed (the format's stateless decoder) and metric
values turned into numbers.

Topic namespace (Sparkplug 3.0, chapter 4): spBv1.0/<group_id>/<message_type>/<edge_node_id>[/<device_id>]; and
spBv1.0/STATE/<host_id> for host applications. The decoder only parses: which metric an alias names is the host
application's business (host.py), since it depends on the birth certificates seen before.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from ...records import Invalid, RawMessage
from .proto import DataType, Payload
from .state import NAMESPACE  # noqa: F401 - re-exported

NODE_TYPES = frozenset({"NBIRTH", "NDEATH", "NDATA", "NCMD"})
DEVICE_TYPES = frozenset({"DBIRTH", "DDEATH", "DDATA", "DCMD"})
# Commands are the host's own (or another host's) requests to the nodes: nothing to store.
IGNORED_TYPES = frozenset({"NCMD", "DCMD"})

def _signed(bits: int):
    top, span = 1 << (bits - 1), 1 << bits
    return lambda v: float(v - span if v >= top else v)


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


# (datatype, the value field it is sent in) -> the number stored. Plain ints as keys: the generated enum's
# attribute lookups cost more than the conversion. Signed types come in two's complement (Int8 to Int32 in a
# uint32, Int64 in a uint64: the specification's encoding).
READ = {}
for _dt in (DataType.Int8, DataType.Int16, DataType.Int32):
    READ[(int(_dt), "int_value")] = _signed(32)
READ[(int(DataType.Int64), "long_value")] = _signed(64)
for _dt in (DataType.UInt8, DataType.UInt16, DataType.UInt32, DataType.UInt64):
    READ[(int(_dt), "int_value")] = READ[(int(_dt), "long_value")] = float
READ[(int(DataType.Float), "float_value")] = _finite
READ[(int(DataType.Double), "double_value")] = _finite
READ[(int(DataType.Boolean), "boolean_value")] = lambda v: 1.0 if v else 0.0
_TEXT = frozenset(int(t) for t in (DataType.String, DataType.Text, DataType.UUID))
_FIRST_ARRAY = int(DataType.Int8Array)
# Not a number the pipeline stores: datasets, templates, bytes, files, property sets, arrays, date-times.
SKIPPED_KIND = {int(DataType.DataSet): "dataset", int(DataType.Template): "template", int(DataType.Bytes): "bytes",
                int(DataType.File): "file", int(DataType.DateTime): "datetime",
                int(DataType.PropertySet): "propertyset", int(DataType.PropertySetList): "propertyset",
                int(DataType.Unknown): "unknown_type"}


@dataclass(slots=True)
class SparkplugMessage:
    """One parsed Sparkplug B message, before the host application resolves its aliases."""

    group_id: str
    message_type: str
    edge_node_id: str
    device_id: str  # "" for a node's own messages
    payload: object  # Payload
    source: RawMessage


def decode(msg: RawMessage, levels: dict[str, str], limits) -> list:
    """spBv1.0/{group_id}/{message_type}/{edge_node_id}[/{device_id}]: the protobuf payload parsed; a payload that
    is not one is refused (`sparkplug_invalid_payload`), as is a topic outside the namespace's shape."""
    mtype = levels["message_type"]
    if mtype in IGNORED_TYPES:
        return []
    parts = msg.mqtt_topic.split("/")
    device = parts[4] if len(parts) == 5 else ""
    if len(parts) > 5 or (mtype in DEVICE_TYPES and not device) or (mtype in NODE_TYPES and device):
        raise Invalid("sparkplug_bad_topic", f"topic {msg.mqtt_topic[:120]!r} does not fit spBv1.0/group/{mtype}/"
                                             f"node{'/device' if mtype in DEVICE_TYPES else ''}")
    if mtype not in NODE_TYPES and mtype not in DEVICE_TYPES:
        raise Invalid("sparkplug_bad_topic", f"unknown Sparkplug message type {mtype[:20]!r}")
    payload = Payload()
    try:
        payload.ParseFromString(msg.payload)
    except (DecodeError, RuntimeError, ValueError) as err:  # truncated, malformed, nested past protobuf's limit
        raise Invalid("sparkplug_invalid_payload", f"not a Sparkplug B payload: {str(err)[:120]}") from None
    if len(payload.metrics) > limits.max_readings * 10:  # births carry more metrics than data messages
        raise Invalid("too_many_readings", f"{len(payload.metrics)} metrics > {limits.max_readings * 10}")
    return [SparkplugMessage(levels["group_id"], mtype, levels["edge_node_id"], device, payload, msg)]


def number(metric, datatype: int) -> tuple[float | None, str]:
    """(value, "") for a metric the pipeline stores as a number, else (None, why it is skipped)."""
    kind = metric.WhichOneof("value")
    if kind is None or metric.is_null:
        return None, "null" if metric.is_null else "no_value"
    read = READ.get((datatype, kind))
    if read is not None:
        value = read(getattr(metric, kind))
        return (value, "") if value is not None else (None, "not_finite")
    if datatype in _TEXT:
        return None, "string"
    if datatype >= _FIRST_ARRAY:
        return None, "array"
    return None, SKIPPED_KIND.get(datatype, "type_mismatch")
