"""Primary host application STATE (Sparkplug 3.0, 5.4): spBv1.0/STATE/<host_id>, retained, JSON
{"online": bool, "timestamp": ms}. Published online on each connect; the MQTT will (same timestamp) says offline
if the daemon dies, and a clean stop publishes offline itself before disconnecting."""
from __future__ import annotations

import orjson

NAMESPACE = "spBv1.0"  # the Sparkplug B topic namespace


def state_topic(host_id: str) -> str:
    return f"{NAMESPACE}/STATE/{host_id}"


def state_payload(online: bool, timestamp_ms: int) -> bytes:
    return orjson.dumps({"online": online, "timestamp": timestamp_ms})
