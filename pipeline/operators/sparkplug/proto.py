"""The Sparkplug B protobuf module, generated from sparkplug_b.proto by `make venv` (grpcio-tools' protoc).

It is a build product, not in the repository: a checkout that skipped `make venv` fails here, at start, saying so.
"""
from __future__ import annotations

try:
    from . import sparkplug_b_pb2 as pb  # noqa: F401 - re-exported
except ImportError as err:  # pragma: no cover - a checkout without the build step
    raise ImportError(
        "pipeline/operators/sparkplug/sparkplug_b_pb2.py is missing or does not match the installed protobuf: "
        f"run `make venv` (it generates the module from sparkplug_b.proto) ({err})") from err

Payload = pb.Payload
DataType = pb.DataType
