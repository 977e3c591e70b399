"""MQTT -> Kafka: the paho network thread hands each raw message to the Kafka producer, nothing more.

Parsing happens after Kafka. A QoS 1 message is acknowledged to the MQTT broker only once Kafka
confirmed its delivery (paho `manual_ack`), so a crash between the two leaves it with the broker,
which sends it again on reconnect (persistent session). Every message gets its receive stamp here, once
(pipeline/ingest/identity.py): the identity of a reading that carries no device timestamp.

`mqtt.fast_path` (default true) receives through BufferedClient (mqtt_client.py, the one module that relies on
paho's private names, for a pinned paho version); false through paho's plain `on_message` and `ack()`. Both
hand `_on_publish` the same (topic bytes, payload, qos, mid, dup).

`mqtt.max_packet_bytes` bounds what one message can make the daemon hold. The fast path refuses a larger one
unread (mqtt_client.py), whatever the protocol: it goes on with an empty payload and its real size, and the
decode stage dead-letters it as payload_too_large with topic and size, so the sender can be told. The plain
path reads a packet whole, so there (MQTT 5 only) the limit is sent as the CONNECT property Maximum Packet Size
and the broker drops larger messages before they reach us, without a dead letter.

MQTT 5 by default: with 3.1.1 the broker's own window of unacknowledged messages (Mosquitto's
max_inflight_messages, 20) is in charge, and a burst beyond that window plus the broker's queue is dropped; with 5
the daemon asks for `mqtt.receive_maximum`. A broker that refuses version 5 gets a new client speaking 3.1.1
(same client id, same session settings), once, logged as event=mqtt_protocol_fallback.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

import paho.mqtt.client as mqtt
from confluent_kafka import Producer
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..config import KafkaConfig, MqttConfig, Secret
from ..observability.metrics import Metrics
from ..runtime.supervisor import Supervisor
from .identity import (BRIDGE_HEADER, MID_HEADER, MQTT_TOPIC_HEADER, ORIGINAL_SIZE_HEADER, RECEIVED_US_HEADER,
                       ReceiveStamps, read_own_tail, relearn)
from ..clients.kafka import consumer_conf, producer_conf
from ..clients.mqtt_tls import configure_tls
from .mqtt_client import BufferedClient, RawHandler
from ..runtime.threadname import name_os_thread

log = logging.getLogger(__name__)
# Records read back at start to recognise resends of messages produced just before a crash (identity.py).
RELEARN_PER_PARTITION = 5000


def partition_key(mqtt_topic: bytes) -> bytes:
    """The second level of the topic (the default formats' sensor id): one sensor's readings stay in one partition,
    in order. The daemon hands the bridge its selected formats' key instead (pipeline/registry/formats.py)."""
    parts = mqtt_topic.split(b"/", 2)
    return parts[1] if len(parts) > 1 else parts[0]


def subscription_filters(cfg: MqttConfig) -> list[str]:
    """The topic filters to subscribe: as configured, or inside the shared subscription group."""
    if not cfg.shared_group:
        return list(cfg.topics)
    return [f"$share/{cfg.shared_group}/{t}" for t in cfg.topics]


def client_id_suffix(cfg: MqttConfig, instance_id: str) -> str:
    """Instances of one shared group need distinct client ids, or the broker would keep only one session."""
    return f"-{instance_id}" if cfg.shared_group else ""


def connect_properties(cfg: MqttConfig) -> Properties:
    """MQTT 5 CONNECT properties: the session's lifetime, our receive window, and (plain path) our largest packet."""
    props = Properties(PacketTypes.CONNECT)
    # clean_session true in 3.1.1 ends the session at disconnect: in 5 that is an expiry of 0.
    props.SessionExpiryInterval = 0 if cfg.clean_session else cfg.session_expiry_s
    props.ReceiveMaximum = cfg.receive_maximum
    if not cfg.fast_path:
        # Only where we could not refuse it unread: a broker that drops a message says nothing to anyone, while
        # the fast path makes a dead letter of it (topic and size) at no more memory than the limit.
        props.MaximumPacketSize = cfg.max_packet_bytes
    return props


# CONNACK codes of a broker that does not speak MQTT 5: 0x84 Unsupported Protocol Version from a version 5
# broker, 1 (unacceptable protocol version) from a 3.1.1 one (paho reads that as 0x84 too).
VERSION_REFUSED = (0x84, 0x01)


def refused_version(protocol: str, reason_value: int) -> bool:
    """Whether a refused CONNECT means: try again in MQTT 3.1.1."""
    return protocol == "5" and reason_value in VERSION_REFUSED


def relearn_count(cfg: MqttConfig) -> int:
    """Records per partition to relearn stamps from: at least the messages the broker may resend (MQTT 5: all
    `receive_maximum` unacknowledged ones can be in Kafka already, in one partition if from one sensor)."""
    return max(RELEARN_PER_PARTITION, cfg.receive_maximum) if cfg.protocol == "5" else RELEARN_PER_PARTITION


def plain_on_message(handler: RawHandler):
    """A paho `on_message` callback (public API only) that hands `handler` what the fast path does."""
    def on_message(_client, _userdata, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic.encode()
        except UnicodeDecodeError:  # MQTT forbids it (brokers refuse it); paho's public API has no raw topic
            topic = b""  # the decode stage dead-letters it: no sensor id in the topic
        handler(topic, message.payload, message.qos, message.mid, bool(message.dup), bool(message.retain))
    return on_message


class MqttBridge:
    """Subscribes to the configured filters and produces every message to the raw Kafka topic.

    The supervisor runs the producer's poll thread (`kafka-producer`) and hears of errors in paho's callbacks."""

    def __init__(self, mqtt_cfg: MqttConfig, kafka_cfg: KafkaConfig, password: Secret, metrics: Metrics,
                 supervisor: Supervisor, max_payload_bytes: int, client_id_suffix: str = "",
                 partition_key: Callable[[bytes], bytes] = partition_key):
        self.cfg = mqtt_cfg
        self.partition_key = partition_key  # topic -> Kafka key, from the topic's levels only (never the payload)
        self.password = password
        self.kafka_cfg = kafka_cfg
        self.max_payload_bytes = max_payload_bytes
        self.topic = kafka_cfg.topics.raw
        self.metrics = metrics
        self.supervisor = supervisor
        self.producer = Producer(producer_conf(kafka_cfg, f"{mqtt_cfg.client_id}{client_id_suffix}-producer"))
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # the broker granted our subscriptions on this connection
        self._stopping = threading.Event()
        self._generation = 0  # bumps on every (re)connect: a mid is only meaningful on its own connection
        self._poller = None  # the supervisor's handle of the poll thread
        self.client_id = mqtt_cfg.client_id + client_id_suffix
        self._bridge_header = (BRIDGE_HEADER, self.client_id.encode())
        self.ignore_retained = mqtt_cfg.retained == "ignore"
        self.stamps = ReceiveStamps()
        self.filters = subscription_filters(mqtt_cfg)
        self.protocol = mqtt_cfg.protocol  # becomes "3.1.1" if the broker refuses version 5
        self._client_lock = threading.Lock()  # the client is replaced once if the broker refuses version 5
        self.client = self._new_client(self.protocol == "5")
        # Per-message counts are plain integers (one writer thread each), added to the Prometheus
        # counters by the producer thread a few times a second: a locked inc() per message cost more
        # than the hand-off itself.
        self._received_n = 0
        self._produced_n = 0
        self._reported = (0, 0, 0)
        # Acknowledgements due (Kafka confirmed the message), sent in bulk after each producer poll.
        self._acks: deque[int] = deque()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if not self.cfg.clean_session:
            self._relearn_stamps()
        self._poller = self.supervisor.spawn("kafka-producer", self._poll_loop)
        with self._client_lock:
            self._connect(self.client)

    def _new_client(self, v5: bool) -> mqtt.Client:
        """A paho client for this bridge (fast path or plain), speaking MQTT 5 or 3.1.1; not connected yet."""
        cfg = self.cfg
        fast = ({"read_linger_s": cfg.read_linger_ms / 1000.0, "max_packet_bytes": cfg.max_packet_bytes}
                if cfg.fast_path else {})
        client = (BufferedClient if cfg.fast_path else mqtt.Client)(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else cfg.clean_session, manual_ack=True, **fast)
        if cfg.username:
            client.username_pw_set(cfg.username, self.password.reveal() or None)
        configure_tls(client, cfg.tls)
        client.reconnect_delay_set(cfg.reconnect_min_delay_s, cfg.reconnect_max_delay_s)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        if cfg.fast_path:
            client.on_publish_raw = self._on_publish
            client.on_too_large_raw = self._on_too_large
        else:
            client.on_message = plain_on_message(self._on_publish)
        client.on_subscribe = self._on_subscribe
        return client

    def _connect(self, client: mqtt.Client) -> None:
        """Start connecting in paho's network thread (it retries until the broker answers)."""
        props, kwargs = None, {}
        if client.protocol == mqtt.MQTTv5:
            props = connect_properties(self.cfg)
            kwargs["clean_start"] = self.cfg.clean_session
        client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive_s, properties=props, **kwargs)
        client.loop_start()

    def _fall_back(self, refused: mqtt.Client, reason) -> None:
        """The broker refused MQTT 5: the same session, spoken to in 3.1.1 from now on (paho's network thread)."""
        refused.loop_stop()  # from its own thread: the loop ends after this callback, without reconnecting
        with self._client_lock:
            if self._stopping.is_set() or refused is not self.client:
                return
            self.protocol = "3.1.1"
            self.client = self._new_client(False)
            self._connect(self.client)
        log.warning("event=mqtt_protocol_fallback from=5 to=3.1.1 reason=%s host=%s port=%d "
                    "note=broker_refused_mqtt5_receive_maximum_not_sent", str(reason).replace(" ", "_"),
                    self.cfg.host, self.cfg.port)

    def _relearn_stamps(self) -> None:
        """Before the broker resends what a previous run of this session left unacknowledged: learn the stamps
        that run gave its last records, so a resend of one already in Kafka keeps its identity."""
        started = time.monotonic()
        conf = consumer_conf(self.kafka_cfg, f"{self.client_id}-relearn")
        records = read_own_tail(conf, self.topic, self.client_id.encode(), relearn_count(self.cfg))
        n = relearn(self.stamps, records)
        log.info("event=receive_stamps_relearned records=%d seconds=%.2f", n, time.monotonic() - started)

    def is_connected(self) -> bool:
        """Connected to the broker (paho's network thread keeps this up to date)."""
        return self.connected.is_set()

    def stop(self, timeout: float) -> None:
        """Stop taking messages, let Kafka confirm (and MQTT acks go out) for what we took, disconnect."""
        self._stopping.set()
        remaining = self.producer.flush(timeout)
        self._send_acks()
        if remaining:
            log.warning("event=producer_unflushed messages=%d note=unacknowledged_mqtt_messages_will_be_resent", remaining)
        with self._client_lock:  # no fallback replaces it from here on (_stopping is set)
            client = self.client
        client.disconnect()
        client.loop_stop()
        if self._poller is not None:
            self._poller.join(timeout=2.0)
        self.metrics.mqtt_connected.set(0)

    # -- paho callbacks (network thread: errors are reported, never lost) ---------------------
    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        name_os_thread("mqtt-network")  # paho's thread, started by paho: named here, in it
        try:
            if reason_code.is_failure:
                if refused_version(self.protocol, reason_code.value):
                    self._fall_back(client, reason_code)
                    return
                log.error("event=mqtt_connect_refused reason=%s", reason_code)
                return
            self._generation += 1
            self.connected.set()
            self.metrics.mqtt_connected.set(1)
            client.subscribe([(t, self.cfg.qos) for t in self.filters])
            log.info("event=mqtt_connected host=%s port=%d tls=%s protocol=%s topics=%s", self.cfg.host, self.cfg.port,
                     self.cfg.tls.enabled, self.protocol, ",".join(self.filters))
        except Exception as err:  # noqa: BLE001
            self.supervisor.report("mqtt.on_connect", err)

    def _on_subscribe(self, _client, _userdata, _mid, reason_codes, _properties) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("event=mqtt_subscribe_refused reasons=%s", ",".join(failed))
        else:
            self.subscribed.set()
            log.info("event=mqtt_subscribed topics=%s", ",".join(self.filters))

    def _on_disconnect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        if client is not self.client:
            return  # the client that was refused MQTT 5, replaced (_fall_back)
        self.connected.clear()
        self.subscribed.clear()
        self.metrics.mqtt_connected.set(0)
        if not self._stopping.is_set():
            log.warning("event=mqtt_disconnected reason=%s note=reconnecting", reason_code)

    def _on_too_large(self, topic: bytes, size: int, qos: int, mid: int, dup: bool, retain: bool) -> None:
        """A message over mqtt.max_packet_bytes, not read: it goes on as its topic and size only."""
        self._on_publish(topic, b"", qos, mid, dup, retain, size)

    def _on_publish(self, topic: bytes, payload: bytes, qos: int, mid: int, dup: bool = False,
                    retain: bool = False, original_size: int = 0) -> None:
        """One MQTT message, as received (topic bytes: no decoding on the hot path, and bad UTF-8 is the
        decode stage's to dead-letter). `original_size`: the size of a payload not read (_on_too_large)."""
        if self._stopping.is_set():
            return  # not acknowledged: the broker keeps it for our next session
        try:
            self._received_n += 1
            gen = self._generation
            if retain and self.ignore_retained:
                # The broker's stored copy of an old message, sent again at every (re)subscription: it was
                # stored when it was published live (brokers clear RETAIN on live delivery). Acknowledged
                # with the next batch of acks, so the broker does not send it again, and counted.
                self.metrics.mqtt_retained_ignored.inc()
                if qos:
                    self._acks.append(mid)
                return
            stamp = self.stamps.stamp(topic, payload, qos, mid, dup)
            headers = [(MQTT_TOPIC_HEADER, topic), (RECEIVED_US_HEADER, str(stamp).encode())]
            if qos:
                headers.append((MID_HEADER, str(mid).encode()))
                headers.append(self._bridge_header)
            if original_size or len(payload) > self.max_payload_bytes:
                # Too big to validate (and maybe for Kafka): pass a truncated copy on so the decode stage
                # dead-letters it with its real size, instead of losing it or blocking here.
                headers.append((ORIGINAL_SIZE_HEADER, str(original_size or len(payload)).encode()))
                payload = payload[: self.max_payload_bytes]
            self._produce(payload, self.partition_key(topic), headers, stamp // 1000,
                          lambda err, kmsg: self._delivered(err, kmsg, mid, qos, gen))
        except Exception as err:  # noqa: BLE001
            self.supervisor.report("mqtt.on_message", err)

    # -- Kafka side ---------------------------------------------------------------------------
    def _produce(self, payload: bytes, key: bytes, headers: list, ts_ms: int, callback) -> None:
        while True:
            try:
                self.producer.produce(self.topic, value=payload, key=key, headers=headers, timestamp=ts_ms,
                                      on_delivery=callback)
                return
            except BufferError:
                # Producer queue full: Kafka is slow or away. Waiting here stops us reading from the
                # MQTT socket, so the broker holds the backlog: back-pressure, not loss.
                self.metrics.kafka_backpressure.inc()
                self.producer.poll(0.05)
                self._send_acks()

    def _delivered(self, err, kmsg, mid: int, qos: int, generation: int) -> None:
        if err is not None:
            # With message.timeout.ms=0 librdkafka retries forever; a failure here is permanent for that
            # attempt (e.g. message too large), so we produce it again and count it.
            self.metrics.kafka_produce_errors.inc()
            log.error("event=kafka_delivery_failed error=%s", err)
            self._produce(kmsg.value(), kmsg.key(), kmsg.headers(), kmsg.timestamp()[1],
                          lambda e, m: self._delivered(e, m, mid, qos, generation))
            return
        self._produced_n += 1
        if qos and generation == self._generation:
            self._acks.append(mid)

    def _send_acks(self) -> None:
        mids = []
        pop = self._acks.popleft
        try:
            while True:
                mids.append(pop())
        except IndexError:
            pass
        if self.cfg.fast_path:
            self.client.ack_many(mids)
        else:
            for mid in mids:  # one PUBACK queued (and paho's network thread woken) per message
                self.client.ack(mid, 1)

    def _poll_loop(self) -> None:
        """The `kafka-producer` thread: delivery callbacks, acks, counts. An error ends it and reaches the
        supervisor (which names the thread)."""
        linger = self.cfg.ack_linger_ms / 1000.0
        try:
            next_report = 0.0
            while not self._stopping.is_set() or len(self.producer):
                served = self.producer.poll(0.1)
                self._send_acks()
                now = time.monotonic()
                if now >= next_report:
                    self._report_counts()
                    next_report = now + 0.25
                if served and linger:
                    # Let the other partitions' reports gather (mqtt.ack_linger_ms); stopping ends the wait.
                    self._stopping.wait(linger)
        finally:
            self._report_counts()

    def _report_counts(self) -> None:
        received, produced, resends = self._received_n, self._produced_n, self.stamps.reused
        last_received, last_produced, last_resends = self._reported
        if received > last_received:
            self.metrics.mqtt_received.inc(received - last_received)
        if produced > last_produced:
            self.metrics.kafka_produced.labels("raw").inc(produced - last_produced)
        if resends > last_resends:
            self.metrics.mqtt_resends.inc(resends - last_resends)
        self._reported = (received, produced, resends)
