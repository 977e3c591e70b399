"""Sparkplug B 3.0 host application: the `sparkplug` format and its operator (docs/formats.md, "Sparkplug B").

Importing this package registers two formats: `sparkplug` (spBv1.0/{group_id}/{message_type}/{edge_node_id}/#,
the device id an optional fifth level; keyed by the edge node, so one node's messages stay in order) and
`sparkplug_state` (spBv1.0/STATE/{host_id}: host applications' state, ours included, taken and not stored).
"""
from __future__ import annotations

from ...registry import formats
from . import codec
from .operator import SparkplugOperator

SPARKPLUG = formats.register(formats.Format(
    "sparkplug", "spBv1.0/{group_id}/{message_type}/{edge_node_id}/#", codec.decode, key_level="edge_node_id",
    operator=SparkplugOperator, doc="Sparkplug B 3.0 (protobuf): births, aliases, deaths, rebirth requests"))
STATE = formats.register(formats.Format(
    "sparkplug_state", "spBv1.0/STATE/{host_id}", codec.ignore, key_level="host_id",
    doc="Sparkplug B host applications' STATE messages: taken, not stored"))
