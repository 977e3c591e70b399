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
from .host import Host
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
        self.host = Host(cfg.rebirth_interval_s, cfg.births_kept, cfg.sensor_type or None)
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
        out: list = []
        births: list = []
        requests: list[tuple[str, str, str]] = []
        now = self.clock()
        m = self.metrics
        types: dict[str, int] = {}
        skipped: dict[str, int] = {}
        for msg in items:
            outcome = self.host.handle(msg, now)
            types[msg.message_type] = types.get(msg.message_type, 0) + 1
            for reason, n in outcome.skipped.items():
                skipped[reason] = skipped.get(reason, 0) + n
            births += outcome.births
            if outcome.rebirth:
                if not self.requests_on:
                    m.sparkplug_rebirth_requests.labels(outcome.rebirth, "disabled").inc()
                elif not outcome.rebirth_sent:
                    m.sparkplug_rebirth_requests.labels(outcome.rebirth, "rate_limited").inc()
                else:
                    requests.append((msg.group_id, msg.edge_node_id, outcome.rebirth))
            if outcome.refused:
                refused.add(msg, Invalid(outcome.refused, f"{msg.message_type} from {msg.group_id}/{msg.edge_node_id}"
                                                          f"{'/' + msg.device_id if msg.device_id else ''} with no "
                                                          "birth certificate before it (a rebirth was asked for)"))
                continue
            out += outcome.readings
            if outcome.offline:
                m.sparkplug_offline.inc(len(outcome.offline))
                out += [SensorOffline(s, now, msg.message_type, msg.source) for s in outcome.offline]
        for kind, n in types.items():  # one locked increment per batch, not per message
            m.sparkplug_messages.labels(kind).inc(n)
        for reason, n in skipped.items():
            m.sparkplug_metrics_skipped.labels(reason).inc(n)
        if births:  # durable before the batch goes on: its offsets are committed only after the sinks hold it
            self.retrying(lambda: self.store.save(births), "sparkplug_births")
            m.sparkplug_births_stored.inc(len(births))
        for group, node, cause in requests:
            self._ask_rebirth(group, node, cause, now)
        return out

    def _ask_rebirth(self, group: str, node: str, cause: str, now: float) -> None:
        topic = f"{NAMESPACE}/{group}/NCMD/{node}"
        sent = self.publish(topic, rebirth_request(int(now * 1000)), False)
        self.metrics.sparkplug_rebirth_requests.labels(cause, "sent" if sent else "not_sent").inc()
        log.info("event=sparkplug_rebirth_requested group=%s node=%s cause=%s sent=%s", group, node, cause, sent)

    def close(self) -> None:
        self.store.close()
