"""The MQTT section: the bridge's broker connection, TLS (shared by the agents) and the broker's drop counters."""
from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .base import Name, NonNegInt, Port, PositiveFloat, Section


class TlsConfig(Section):
    """TLS towards a service: the server certificate is verified against `ca_file` (or the system CAs)."""

    enabled: bool = False
    ca_file: str = ""        # empty: the system's CA bundle
    cert_file: str = ""      # client certificate, for brokers that authenticate clients by certificate
    key_file: str = ""
    # Skip host name and certificate verification: for a test bench only, never in production.
    insecure: bool = False


class BrokerStatsConfig(Section):
    """The broker's own counters of messages it dropped, watched by a small client of the daemon's own."""

    enabled: bool = True
    # Counters the broker publishes (wildcards allowed). Mosquitto: every sys_interval seconds (default 10),
    # when the value changed. EMQX and HiveMQ publish theirs elsewhere (README, "Delivery guarantees").
    topics: tuple[Annotated[str, msgspec.Meta(min_length=1, max_length=200)], ...] = ("$SYS/broker/publish/messages/dropped",)
    # How often the growth seen becomes a reading `mqtt_dropped` of sensor broker:<host> (0 when none).
    report_interval_s: Annotated[float, msgspec.Meta(ge=1.0, le=3600)] = 10.0
    # The broker's moving average of drops per minute over recent_rate_window_s: Mosquitto republishes the counter
    # only when it changes and lets its retained copy expire after 60 s, so a daemon that starts later sees the
    # drops only here ("" turns it off). One topic, no wildcards.
    recent_rate_topic: Annotated[str, msgspec.Meta(max_length=200, pattern=r"^[^+#]*$")] = "$SYS/broker/load/publish/dropped/15min"
    recent_rate_window_s: Annotated[float, msgspec.Meta(ge=60.0, le=86400)] = 900.0


class MqttConfig(Section):
    host: Name = "localhost"
    port: Port = 1883
    # "5": the daemon tells the broker how many unacknowledged messages it may send (receive_maximum) instead of
    # leaving it to the broker's own window (Mosquitto: max_inflight_messages, 20), and the largest packet it
    # takes (max_packet_bytes). A broker that refuses version 5 is spoken to in 3.1.1 (logged as
    # event=mqtt_protocol_fallback). "3.1.1": always 3.1.1.
    protocol: Literal["3.1.1", "5"] = "5"
    # A stable client id plus clean_session=false is what makes the broker keep our session (and
    # the QoS 1 messages queued for it) while the daemon restarts. MQTT 5: clean start false, and the session
    # expires session_expiry_s after a disconnect (clean_session true: at once, as in 3.1.1).
    client_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "realtime-pipeline"
    clean_session: bool = False
    session_expiry_s: NonNegInt = 86400
    username: str = ""
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 30
    topics: tuple[Name, ...] = ("sensors/#", "system/#", "logs/#")
    qos: Literal[0, 1] = 1
    # MQTT 5 Receive Maximum: how many unacknowledged QoS 1 messages the broker may send us (Mosquitto takes it in
    # place of max_inflight_messages). A stock Mosquitto holds receive_maximum + max_queued_messages (1000) for us
    # before it drops: 5000 let a burst of 6,000 messages from one client through, not one of 8,000 (docs/operations.md).
    receive_maximum: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 5000
    reconnect_min_delay_s: PositiveFloat = 0.5
    reconnect_max_delay_s: PositiveFloat = 10.0
    tls: TlsConfig = TlsConfig()
    # Scale-out: several instances subscribe as one MQTT shared subscription group ($share/<group>/<filter>)
    # and the broker hands each message to one of them. Empty: off (a single instance). When set, the
    # client id becomes <client_id>-<instance_id> so every instance keeps its own persistent session.
    shared_group: Annotated[str, msgspec.Meta(pattern=r"^[^/#+$]*$", max_length=64)] = ""
    broker_stats: BrokerStatsConfig = BrokerStatsConfig()
    # true: QoS 0/1 PUBLISH packets parsed straight from a read buffer (pipeline/ingest/mqtt_client.py, written
    # against one exact paho-mqtt version); false: paho's plain on_message and ack() (public API only), slower.
    fast_path: bool = True
    # Fast path only: after a wake-up that read few messages, wait this long before the next read, so at low
    # rates one wake-up carries several messages (a wake-up costs more than a message). Adds at most this
    # much latency; at high rates every read is full and it never waits.
    read_linger_ms: Annotated[int, msgspec.Meta(ge=0, le=100)] = 15
    # After a round of Kafka delivery reports, the next round gathers this long: each round is a wake-up of the
    # producer's poll thread and a PUBACK write that wakes the network thread, and librdkafka reports each
    # partition's batch on its own (at 1,000 msg/s, linger.ms 15 and 4 partitions: about 260 rounds a second).
    # Delays only the acknowledgements to the broker, never a reading; keep it well under what the broker's
    # window of unacknowledged messages (receive_maximum, or its max_inflight_messages) lasts at your rate.
    ack_linger_ms: Annotated[int, msgspec.Meta(ge=0, le=100)] = 10
    # Retained messages: the broker sends its stored copy of a topic's last retained message at every
    # subscription (each daemon start, each reconnect), flagged RETAIN; a live message never carries the
    # flag. ignore: acknowledge and count those copies (the live message was stored when it was published);
    # store: treat them as new messages (a reading without a timestamp would be stored once per start).
    retained: Literal["ignore", "store"] = "ignore"
    # The largest MQTT packet (fixed header, topic and payload) the daemon takes in, so no publisher can make
    # it hold more for one message. The fast path refuses larger ones unread and dead-letters them as
    # payload_too_large (topic and size), with either protocol. fast_path: false reads a packet whole first
    # (paho's public API has no limit): with MQTT 5 the limit is then sent to the broker (CONNECT Maximum Packet
    # Size), which drops larger messages unseen. Must leave room for validation.max_payload_bytes plus a topic
    # (config check); keep the broker's message_size_limit below it.
    max_packet_bytes: Annotated[int, msgspec.Meta(ge=1024, le=268_435_460)] = 262_144
