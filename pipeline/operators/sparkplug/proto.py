"""The Sparkplug B protobuf module, generated from sparkplug_b.proto by `make venv` (grpcio-tools' protoc).

It is a build product, not in the repository: a checkout that skipped `make venv` fails here, at start, saying so.
"""
from __future__ import annotations

try:
    from .sparkplug_b_pb2 import DataType, Payload  # noqa: F401 - re-exported
except ModuleNotFoundError as err:  # pragma: no cover - a checkout without the build step
    raise ImportError("pipeline/operators/sparkplug/sparkplug_b_pb2.py is missing: run `make venv` (it generates "
                      "the module from sparkplug_b.proto with grpcio-tools' protoc)") from err
except Exception as err:  # pragma: no cover - protobuf's VersionError: generated for another protobuf runtime
    raise ImportError(f"pipeline/operators/sparkplug/sparkplug_b_pb2.py does not fit the installed protobuf ({err}): "
                      "install requirements.txt and delete the module, then run `make venv` to generate it "
                      "again") from err
