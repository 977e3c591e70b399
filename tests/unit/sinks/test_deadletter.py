"""Dead letters without a broker: one topic per kind, the original payload and key with why and where in
headers, counted only once Kafka confirmed them all; the sink's selection and transient errors."""
from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException
from prometheus_client import CollectorRegistry

from pipeline.config import KafkaConfig, KafkaTopics, RetryConfig, SinkConfig
from pipeline.observability.metrics import Metrics
from pipeline.records import EXHAUSTED, FAILED, INVALID, DeadLetter, RawMessage
from pipeline.runtime.batch import Batch
from pipeline.sinks.deadletter import DeadLetterSink, DeadLetterWriter, DeliveryFailed, dead_letter_topics

TOPICS = KafkaTopics(raw="r", dead_letter="dl.invalid", dead_letter_failed="dl.failed", dead_letter_exhausted="dl.exhausted")
SOURCE = RawMessage("sensors/dev-1", b'{"value": "x"}', 1_700_000_000.25, b"dev-1", "r", 2, 41)


class FakeProducer:
    """Keeps what was produced; flush() confirms each with `outcome` (an error, or None) unless told to hold."""

    def __init__(self, outcome=None, confirm=True):
        self.outcome, self.confirm = outcome, confirm
        self.produced: list[dict] = []
        self._callbacks: list = []

    def produce(self, topic, value=None, key=None, headers=None, on_delivery=None):
        self.produced.append({"topic": topic, "value": value, "key": key, "headers": dict(headers)})
        self._callbacks.append(on_delivery)

    def flush(self, timeout=None):
        if self.confirm:
            for cb in self._callbacks:
                cb(self.outcome, None)
        self._callbacks = []
        return 0


def writer(producer: FakeProducer) -> DeadLetterWriter:
    w = DeadLetterWriter(KafkaConfig(bootstrap_servers="127.0.0.1:9", topics=TOPICS), "test", Metrics(CollectorRegistry()))
    w.producer = producer  # the real one never connects: nothing was produced through it
    return w


def counted(w: DeadLetterWriter, kind: str, reason: str):
    return w.metrics.registry.get_sample_value("pipeline_dead_letters_total", {"kind": kind, "reason": reason})


def test_each_kind_has_its_own_topic():
    assert dead_letter_topics(KafkaConfig(topics=TOPICS)) == {
        INVALID: "dl.invalid", FAILED: "dl.failed", EXHAUSTED: "dl.exhausted"}


def test_a_letter_carries_the_original_payload_and_key_and_why_and_where_in_headers():
    producer = FakeProducer()
    w = writer(producer)
    letters = [DeadLetter(SOURCE, "not_a_number", "validate", "value 'x'", first_failure_at=1_700_000_001.5,
                          metric="temperature", refused={"temperature": "not_a_number", "humidity": "out_of_range"}),
               DeadLetter(SOURCE, "sink_rejected", "postgres", "E" * 1500, EXHAUSTED, attempts=3),
               DeadLetter(SOURCE, "stage_error", "transform", "ZeroDivisionError: boom", FAILED)]
    w.send(letters)
    assert [p["topic"] for p in producer.produced] == ["dl.invalid", "dl.exhausted", "dl.failed"]
    first = producer.produced[0]
    assert (first["value"], first["key"]) == (SOURCE.payload, SOURCE.key)
    assert first["headers"] == {
        "reason": b"not_a_number", "kind": b"invalid", "stage": b"validate", "error": b"value 'x'", "attempts": b"1",
        "mqtt_topic": b"sensors/dev-1", "source_topic": b"r", "source_partition": b"2", "source_offset": b"41",
        "received_at": b"1700000000.25", "first_failure_at": b"1700000001.5", "metric": b"temperature",
        "metrics": b"temperature,humidity", "reasons": b'{"temperature":"not_a_number","humidity":"out_of_range"}'}
    exhausted = producer.produced[1]["headers"]
    assert exhausted["attempts"] == b"3" and len(exhausted["error"]) == 1000  # long errors are cut
    assert "metric" not in exhausted and "metrics" not in exhausted
    assert counted(w, INVALID, "not_a_number") == 1 and counted(w, EXHAUSTED, "sink_rejected") == 1
    assert counted(w, FAILED, "stage_error") == 1


def test_a_header_that_is_not_valid_text_is_still_sent():
    producer = FakeProducer()
    w = writer(producer)
    odd = RawMessage("sensors/\udcff", b"\xff", 1.0, None, "r", 0, 0)
    w.send([DeadLetter(odd, "bad_encoding", "decode", "x")])
    assert producer.produced[0]["headers"]["mqtt_topic"] == b"sensors/?"


@pytest.mark.parametrize("producer", [FakeProducer(outcome=KafkaError(KafkaError._MSG_TIMED_OUT)),
                                      FakeProducer(confirm=False)], ids=["delivery error", "unconfirmed"])
def test_letters_kafka_did_not_confirm_raise_and_are_not_counted(producer):
    w = writer(producer)
    with pytest.raises(DeliveryFailed):
        w.send([DeadLetter(SOURCE, "not_a_number", "validate", "x")])
    assert counted(w, INVALID, "not_a_number") is None


def test_the_sink_writes_the_batchs_dead_letters_retries_delivery_failures_and_tells_listeners():
    producer = FakeProducer()
    w = writer(producer)
    sink = DeadLetterSink(w, SinkConfig(), RetryConfig(), w.metrics, 4)
    letter = DeadLetter(SOURCE, "not_a_number", "validate", "x")
    batch = Batch([], [letter], {("r", 2): 42}, 1)
    assert sink.select(batch) == [letter]
    heard = []
    sink.subscribe(heard.append)
    sink._flush([batch], sink.select(batch))
    assert len(producer.produced) == 1 and heard == [[letter]] and batch.done.is_set()
    assert sink.is_transient(DeliveryFailed("x")) and sink.is_transient(KafkaException(KafkaError(KafkaError._TRANSPORT)))
    assert sink.is_transient(BufferError("queue full")) and not sink.is_transient(ValueError("bug"))
