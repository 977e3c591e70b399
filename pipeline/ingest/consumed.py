"""Kafka messages as the consumers take them: a batch gathered from the fetched messages (gather), and each
message turned into a RawMessage (to_raw). Shared by the main consumer (dispatch.py) and the best-effort
sinks' feeds (sink_feed.py)."""
from __future__ import annotations

from ..records import RawMessage
from .identity import MQTT_TOPIC_HEADER, ORIGINAL_SIZE_HEADER, RECEIVED_US_HEADER

# Fewer messages than this already fetched means a low rate: the batch waits kafka.consume_linger_ms to grow.
# At high rates a fetch brings more than this at once and nothing waits.
LINGER_BELOW = 64


def to_raw(msg) -> RawMessage:
    """A consumed Kafka message -> RawMessage (mqtt topic, receive stamp and original size from headers).

    The receive time is the bridge's stamp in µs (identity.py); a record without one (written by another
    producer) falls back to its Kafka timestamp, which a redelivery of the record reproduces too."""
    mqtt_topic = ""
    original_size = 0
    received_at = None
    for name, value in msg.headers() or ():
        if value is None:  # a header without a value (another producer's): nothing to read
            continue
        if name == MQTT_TOPIC_HEADER:
            mqtt_topic = value.decode("utf-8", "replace")
        elif name == RECEIVED_US_HEADER and value.isdigit():
            received_at = int(value) / 1_000_000
        elif name == ORIGINAL_SIZE_HEADER and value.isdigit():
            original_size = int(value)
    if received_at is None:
        received_at = msg.timestamp()[1] / 1000.0
    return RawMessage(mqtt_topic, msg.value() or b"", received_at, msg.key(), msg.topic(),
                      msg.partition(), msg.offset(), original_size)


def gather(consumer, first, batch_size: int, linger_s: float) -> list:
    """A batch from the first message polled and whatever else is already fetched, at most batch_size. A small
    one (fewer than LINGER_BELOW: a low rate) first waits up to linger_s for that many, no more: consume(n, t)
    returns once it has n. At 1,000 msg/s that is the whole linger (about 40 messages); at 6,000 msg/s about
    10 ms, where asking for batch_size held every batch the whole 40 ms (+20 ms at p50 to Redis)."""
    msgs = [first]
    if batch_size > 1:
        msgs.extend(consumer.consume(batch_size - 1, 0))
        enough = min(LINGER_BELOW, batch_size)
        if len(msgs) < enough and linger_s:
            msgs.extend(consumer.consume(enough - len(msgs), linger_s))
            if len(msgs) < batch_size:
                msgs.extend(consumer.consume(batch_size - len(msgs), 0))
    return msgs
