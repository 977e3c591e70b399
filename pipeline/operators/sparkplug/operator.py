"""The Sparkplug B host application as the `sparkplug` format's operator: host.py decides, this does the I/O.

On the consumer thread (pipeline/runtime/format_operator.py), per batch: each message through the state machine;
births made durable (store.py) before the batch goes on; rebirth requests published (NCMD); readings and offline
marks handed on in message order. Partitions assigned: their births are read back; revoked: forgotten.
"""
from __future__ import annotations

import logging
import time

from ...records import Invalid, SensorOffline
from .codec import NAMESPACE, SparkplugMessage
from .host import Host, Outcome
from .proto import DataType, Payload
from .store import BirthStore

log = logging.getLogger(__name__)
REBIRTH_METRIC = "Node Control/Rebirth"


def rebirth_request(now_ms: int) -> bytes:
    """An NCMD payload asking for a rebirth: `Node Control/Rebirth` = true (Sparkplug 3.0, 6.4.16)."""
    p = Payload(timestamp=now_ms)
    p.metrics.add(name=REBIRTH_METRIC, timestamp=now_ms, datatype=DataType.Boolean, boolean_value=True)
    return p.SerializeToString()


class SparkplugOperator:
    """Births, aliases, seq and deaths of the edge nodes whose messages this instance reads."""

    accepts = SparkplugMessage

    def __init__(self, services, clock=time.time):
        cfg = services.config.sparkplug
        self.host = Host(cfg.rebirth_interval_s, cfg.births_kept, cfg.sensor_type or None, cfg.rename)
        self.store = BirthStore(services.connect, cfg.births_kept)
        self.requests_on = cfg.rebirth_requests
        self.publish = services.publish
        self.retrying = services.retrying
        self.metrics = services.metrics
        self.clock = clock

    def start(self) -> None:
        """Nothing until partitions are assigned: births are read back per partition."""

    def partitions_assigned(self, partitions: set[int]) -> None:
        held = {b.partition for node in self.host.nodes.values() for bs in node.births.values() for b in bs}
        new = set(partitions) - held
        if not new:
            return
        births = self.retrying(lambda: self.store.load(new), "sparkplug_births_load")
        self.host.load(births)
        log.info("event=sparkplug_births_loaded partitions=%s births=%d", ",".join(map(str, sorted(new))), len(births))

    def partitions_revoked(self, partitions: set[int]) -> None:
        self.host.forget(set(partitions))

    def process_batch(self, items: list, refused) -> list:
        now = self.clock()
        m = self.metrics
        out = Outcome()
        types: dict[str, int] = {}
        handle = self.host.handle
        for msg in items:
            handle(msg, now, out)
            types[msg.message_type] = types.get(msg.message_type, 0) + 1
        for kind, n in types.items():  # one locked increment per batch, not per message
            m.sparkplug_messages.labels(kind).inc(n)
        for reason, n in out.skipped.items():
            m.sparkplug_metrics_skipped.labels(reason).inc(n)
        for msg, reason in out.refusals:
            refused.add(msg, Invalid(reason, f"{msg.message_type} from {msg.group_id}/{msg.edge_node_id}"
                                             f"{'/' + msg.device_id if msg.device_id else ''} with no birth "
                                             "certificate before it (a rebirth was asked for)"))
        if out.births:  # durable before the batch goes on: its offsets are committed only after the sinks hold it
            births = out.births
            self.retrying(lambda: self.store.save(births), "sparkplug_births")
            m.sparkplug_births_stored.inc(len(births))
        for msg, cause, sent in out.requests:
            if not self.requests_on:
                m.sparkplug_rebirth_requests.labels(cause, "disabled").inc()
            elif not sent:
                m.sparkplug_rebirth_requests.labels(cause, "rate_limited").inc()
            else:
                self._ask_rebirth(msg.group_id, msg.edge_node_id, cause, now)
        if out.offline:
            m.sparkplug_offline.inc(len(out.offline))
            return out.readings + [SensorOffline(s, now, msg.message_type, msg.source) for s, msg in out.offline]
        return out.readings

    def _ask_rebirth(self, group: str, node: str, cause: str, now: float) -> None:
        topic = f"{NAMESPACE}/{group}/NCMD/{node}"
        sent = self.publish(topic, rebirth_request(int(now * 1000)), False)
        self.metrics.sparkplug_rebirth_requests.labels(cause, "sent" if sent else "not_sent").inc()
        log.info("event=sparkplug_rebirth_requested group=%s node=%s cause=%s sent=%s", group, node, cause, sent)

    def close(self) -> None:
        self.store.close()
