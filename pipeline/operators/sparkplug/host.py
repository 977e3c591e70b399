"""The Sparkplug B host application's state machine: pure (no I/O; the caller passes `now` and does what the
outcome says: store births, publish rebirth requests, hand on readings and offline marks).

Per edge node (group_id, edge_node_id) it keeps the birth certificates (NBIRTH, and a DBIRTH per device) with
their Kafka position, and the last `seq` (0-255, wrapping). A message is resolved against the births at
positions before its own, so a message read again after a restart (Kafka redelivers from the last commit) is
resolved by the birth that preceded it, never by a later one: nothing is invented. An NBIRTH invalidates the
node's device births before it (the specification: devices are born again after their node). A death is a birth
without metrics (a tombstone): data after it and before the next birth is data before any birth.

What asks the node for a rebirth (NCMD `Node Control/Rebirth`, at most once per `rebirth_interval_s` per node):
data before any birth, an alias or name no birth defined, a gap in `seq`. NDEATH counts only when its bdSeq is
the current NBIRTH's (an older session's will, delivered late, is ignored).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...records import metric_name, sensor_name
from ...stages.decode import Candidate
from .codec import READ, SparkplugMessage, number

# Metrics of the protocol itself, not readings.
PROTOCOL_PREFIXES = ("Node Control/", "Device Control/")
BD_SEQ = "bdSeq"
SEQ_MODULO = 256
NAMES_CACHED = 100_000


@dataclass(frozen=True, slots=True)
class Birth:
    """A birth certificate (metrics: alias -> (name, datatype); names: name -> datatype), or a death (None)."""

    group_id: str
    edge_node_id: str
    device_id: str
    partition: int
    offset: int
    bd_seq: int | None
    aliases: dict[int, tuple[str, int]] | None
    names: dict[str, int] | None

    @property
    def alive(self) -> bool:
        return self.names is not None


@dataclass(slots=True)
class Node:
    """One edge node's births per device ("" the node itself), last seq and last rebirth request."""

    births: dict[str, list[Birth]] = field(default_factory=dict)
    seq: int | None = None
    last_request: float | None = None


@dataclass(slots=True)
class Outcome:
    """What messages ask of the operator (one per batch: the operator's loop makes no object per message)."""

    readings: list = field(default_factory=list)  # Candidates
    offline: list[tuple[str, SparkplugMessage]] = field(default_factory=list)  # sensors gone now (a death), by what
    births: list[Birth] = field(default_factory=list)  # to make durable before the messages' offsets are committed
    # Rebirth requests: (message, why, whether the rate limit lets it go now); at most one per message.
    requests: list[tuple[SparkplugMessage, str, bool]] = field(default_factory=list)
    refusals: list[tuple[SparkplugMessage, str]] = field(default_factory=list)  # whole messages refused: dead letters
    skipped: dict[str, int] = field(default_factory=dict)  # metrics not stored, by reason

    @property
    def rebirth(self) -> str:
        """Why the last message asked for a rebirth ("": none asked)."""
        return self.requests[-1][1] if self.requests else ""

    @property
    def rebirth_sent(self) -> bool:
        return bool(self.requests) and self.requests[-1][2]

    @property
    def refused(self) -> str:
        return self.refusals[-1][1] if self.refusals else ""

    @property
    def offline_ids(self) -> list[str]:
        return [sensor for sensor, _ in self.offline]


def node_sensor(group_id: str, edge_node_id: str, device_id: str = "") -> str:
    """The sensor id of a node ("group/node") or device ("group/node/device") by the one naming rule."""
    raw = f"{group_id}/{edge_node_id}/{device_id}" if device_id else f"{group_id}/{edge_node_id}"
    return sensor_name(raw)


def _current(births: list[Birth] | None, offset: int) -> Birth | None:
    """The latest birth (or death) before position `offset` (-1: position unknown, the latest)."""
    if not births:
        return None
    last = births[-1]
    if offset < 0 or last.offset < offset:  # nearly always: the latest birth is before the message
        return last
    for b in reversed(births):
        if b.offset < offset:
            return b
    return None


class Host:
    """Births, aliases and sequence numbers of the edge nodes this instance reads."""

    def __init__(self, rebirth_interval_s: float = 10.0, births_kept: int = 8, sensor_type: str | None = None,
                 rename: dict[str, str] | None = None):
        self.rebirth_interval_s = rebirth_interval_s
        self.births_kept = births_kept
        self.sensor_type = sensor_type
        # The name normalised (as a mapping's rename) or as the node writes it -> the name stored.
        self.rename = dict(rename or {})
        self.nodes: dict[tuple[str, str], Node] = {}
        # Names by the naming rule, computed once per name (a regex each time cost more than the rest of a metric).
        self._sensors: dict[tuple[str, str, str], str] = {}
        self._metrics: dict[str, str] = {}

    def _sensor(self, group: str, node: str, device: str) -> str:
        key = (group, node, device)
        sid = self._sensors.get(key)
        if sid is None:
            if len(self._sensors) >= NAMES_CACHED:
                self._sensors.clear()
            sid = self._sensors[key] = node_sensor(group, node, device)
        return sid

    def _metric(self, name: str) -> str:
        """The stored metric name of a device's metric name; "" for the protocol's own metrics (not stored)."""
        metric = self._metrics.get(name)
        if metric is None:
            if len(self._metrics) >= NAMES_CACHED:
                self._metrics.clear()
            protocol = name == BD_SEQ or name.startswith(PROTOCOL_PREFIXES)
            normal = "" if protocol else metric_name(name)
            metric = self._metrics[name] = self.rename.get(name) or self.rename.get(normal) or normal
        return metric

    # -- state coming and going --------------------------------------------------------------------
    def load(self, births: list[Birth]) -> None:
        """Births read back from the store (a start, a newly assigned partition), in any order."""
        for b in sorted(births, key=lambda b: b.offset):
            self._add(b)

    def forget(self, partitions: set[int]) -> None:
        """The nodes whose births were read from these partitions go (another instance reads them now)."""
        for key, node in list(self.nodes.items()):
            if any(b.partition in partitions for bs in node.births.values() for b in bs):
                del self.nodes[key]

    def _add(self, birth: Birth) -> None:
        node = self.nodes.setdefault((birth.group_id, birth.edge_node_id), Node())
        kept = node.births.setdefault(birth.device_id, [])
        if kept and birth.offset >= 0 and kept[-1].offset >= birth.offset:  # read again (a redelivery)
            if any(b.offset == birth.offset for b in kept):
                return
            kept.append(birth)
            kept.sort(key=lambda b: b.offset)
        else:
            kept.append(birth)
        del kept[:-self.births_kept]

    # -- messages ------------------------------------------------------------------------------------
    def handle(self, m: SparkplugMessage, now: float, out: Outcome | None = None) -> Outcome:
        """One message; what it asks is added to `out` (a new Outcome when not given)."""
        out = out if out is not None else Outcome()
        key = (m.group_id, m.edge_node_id)
        node = self.nodes.get(key)
        p = m.payload
        src = m.source
        mtype = m.message_type
        if mtype == "NDEATH":
            self._death(m, node, out)
            return out
        seq = p.seq if p.HasField("seq") else None
        if mtype == "NBIRTH":
            node = self.nodes.setdefault(key, Node())
            birth = self._birth(m, out)
            out.births.append(birth)
            self._add(birth)
            node.seq = seq
            self._values(m, birth, out)
            return out
        if node is None:
            return self._no_birth(m, out, now)
        if seq is not None and node.seq is not None and seq != (node.seq + 1) % SEQ_MODULO:
            self._ask(node, out, "seq_gap", now, m)
        if seq is not None:
            node.seq = seq
        nbirth = _current(node.births.get(""), src.offset)
        if nbirth is None or nbirth.names is None:
            return self._no_birth(m, out, now, node)
        if mtype == "DBIRTH":
            birth = self._birth(m, out, bd_seq=nbirth.bd_seq)
            out.births.append(birth)
            self._add(birth)
            self._values(m, birth, out)
            return out
        if mtype == "NDATA":
            self._values(m, nbirth, out, node, now)
            return out
        dbirth = _current(node.births.get(m.device_id), src.offset)
        if dbirth is None or dbirth.names is None or (dbirth.offset < nbirth.offset and src.offset >= 0):
            return self._no_birth(m, out, now, node)
        if mtype == "DDEATH":
            self._dead(m, m.device_id, nbirth.bd_seq, out)
            out.offline.append((node_sensor(m.group_id, m.edge_node_id, m.device_id), m))
            return out
        self._values(m, dbirth, out, node, now)  # DDATA
        return out

    def _death(self, m: SparkplugMessage, node: Node | None, out: Outcome) -> None:
        """NDEATH: the node and every device born under it are offline, if its bdSeq is the current session's."""
        bd_seq = next((x.long_value or x.int_value for x in m.payload.metrics if x.name == BD_SEQ), None)
        nbirth = _current(node.births.get(""), m.source.offset) if node is not None else None
        if nbirth is None or nbirth.names is None or bd_seq is None or bd_seq != nbirth.bd_seq:
            out.skipped["stale_death"] = out.skipped.get("stale_death", 0) + 1
            return
        out.offline.append((node_sensor(m.group_id, m.edge_node_id), m))
        for device, births in node.births.items():
            b = _current(births, m.source.offset)
            if device and b is not None and b.names is not None and b.offset > nbirth.offset:
                out.offline.append((node_sensor(m.group_id, m.edge_node_id, device), m))
        self._dead(m, "", bd_seq, out)
        node.seq = None

    def _dead(self, m: SparkplugMessage, device: str, bd_seq: int | None, out: Outcome) -> None:
        tomb = Birth(m.group_id, m.edge_node_id, device, m.source.partition, m.source.offset, bd_seq, None, None)
        out.births.append(tomb)
        self._add(tomb)

    def _birth(self, m: SparkplugMessage, out: Outcome, bd_seq: int | None = None) -> Birth:
        aliases: dict[int, tuple[str, int]] = {}
        names: dict[str, int] = {}
        for x in m.payload.metrics:
            if not x.name:
                out.skipped["unnamed_in_birth"] = out.skipped.get("unnamed_in_birth", 0) + 1
                continue
            if x.name == BD_SEQ and m.message_type == "NBIRTH":
                bd_seq = x.long_value or x.int_value
            names[x.name] = x.datatype
            if x.HasField("alias"):
                aliases[x.alias] = (x.name, x.datatype)
        return Birth(m.group_id, m.edge_node_id, m.device_id, m.source.partition, m.source.offset, bd_seq,
                     aliases, names)

    def _values(self, m: SparkplugMessage, birth: Birth, out: Outcome, node: Node | None = None,
                now: float = 0.0) -> None:
        """The message's metrics as readings, names and datatypes from `birth`."""
        sensor = self._sensor(m.group_id, m.edge_node_id, m.device_id)
        p = m.payload
        default_ts = p.timestamp / 1000.0 if p.HasField("timestamp") else None
        aliases, names = birth.aliases or {}, birth.names or {}
        skipped, readings, src, stype = out.skipped, out.readings, m.source, self.sensor_type
        for x in p.metrics:
            name = x.name
            if name:
                datatype = names.get(name)
                why = "unknown_name" if datatype is None else ""
            else:
                alias = x.alias  # 0 also when unset: only then is it asked whether it was sent
                known = aliases.get(alias) if alias or x.HasField("alias") else None
                if known is not None:
                    name, datatype = known
                    why = ""
                else:
                    why = "unknown_alias" if alias or x.HasField("alias") else "unnamed"
            if why:
                skipped[why] = skipped.get(why, 0) + 1
                if node is not None and why != "unnamed":
                    self._ask(node, out, "unknown_alias", now, m)
                continue
            metric = self._metric(name)
            if not metric:  # bdSeq, Node Control/*, Device Control/*
                continue
            # 0 is Unknown as a datatype and no time as a timestamp: unset fields read as 0, no HasField needed.
            dt = x.datatype or datatype
            kind = x.WhichOneof("value")
            read = READ.get((dt, kind))  # codec.number inlined for the numbers; it names why a value is skipped
            value = read(getattr(x, kind)) if read is not None and not x.is_null else None
            if value is None:
                why = number(x, dt)[1]
                skipped[why] = skipped.get(why, 0) + 1
                continue
            ts = x.timestamp
            ts = ts / 1000.0 if ts else default_ts
            readings.append(Candidate(sensor, metric, value, ts, stype, None, None, src))

    def _no_birth(self, m: SparkplugMessage, out: Outcome, now: float, node: Node | None = None) -> Outcome:
        """Data (or a device birth or death) with no live birth to read it by: refused, and a rebirth asked for."""
        if node is None:
            node = self.nodes.setdefault((m.group_id, m.edge_node_id), Node())
        out.refusals.append((m, "sparkplug_before_birth"))
        self._ask(node, out, "before_birth", now, m)
        return out

    def _ask(self, node: Node, out: Outcome, why: str, now: float, m: SparkplugMessage) -> None:
        """A rebirth request for the node (once per message), sent unless one went less than rebirth_interval_s ago."""
        if out.requests and out.requests[-1][0] is m:
            return
        sent = node.last_request is None or now - node.last_request >= self.rebirth_interval_s
        if sent:
            node.last_request = now
        out.requests.append((m, why, sent))
