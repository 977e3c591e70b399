"""The Kafka source without a broker: headers -> RawMessage, a consumed batch routed to every sink with the
offsets to commit, the pause while a sink's queue is full (and the rewind after it), readiness with the watchdog."""
from __future__ import annotations

import threading

import pytest
from confluent_kafka import KafkaError, KafkaException
from prometheus_client import CollectorRegistry

from pipeline.config import KafkaConfig, RetryConfig, SinkConfig
from pipeline.ingest.identity import MQTT_TOPIC_HEADER, ORIGINAL_SIZE_HEADER, RECEIVED_US_HEADER
from pipeline.ingest.consumed import to_raw
from pipeline.ingest.dispatch import ConsumeDispatch
from pipeline.observability.metrics import Metrics
from pipeline.records import DeadLetter, LogRecord, Reading
from pipeline.runtime.batch import Batch
from pipeline.sinks.base import BatchingSink

KAFKA_TS_MS = 1_700_000_000_123  # the record's own Kafka timestamp


class Msg:
    """What confluent_kafka's Consumer.poll/consume returns, as far as the source reads it."""

    def __init__(self, value=b"21.5", headers=None, offset=0, partition=0, topic="raw", key=b"k", error=None):
        self._value, self._headers, self._offset = value, headers, offset
        self._partition, self._topic, self._key, self._error = partition, topic, key, error

    def value(self):
        return self._value

    def headers(self):
        return self._headers

    def key(self):
        return self._key

    def topic(self):
        return self._topic

    def partition(self):
        return self._partition

    def offset(self):
        return self._offset

    def timestamp(self):
        return (1, KAFKA_TS_MS)

    def error(self):
        return self._error


class Err:
    """A KafkaError as a consumed message carries it."""

    def __init__(self, code, fatal=False):
        self._code, self._fatal = code, fatal

    def code(self):
        return self._code

    def fatal(self):
        return self._fatal

    def __str__(self):
        return f"error {self._code}"


class FakeChain:
    """Payload b"log..." -> a log record, b"bad..." -> a dead letter, anything else -> a reading."""

    def __init__(self):
        self.seen = []
        self.flushes = 0

    def run(self, raw, outputs, dead):
        self.seen.append(raw)
        if raw.payload.startswith(b"log"):
            outputs.append(LogRecord("app", "INFO", "m", None, {}, 1.0, raw.received_at, raw))
        elif raw.payload.startswith(b"bad"):
            dead.append(DeadLetter(raw, "not_a_number", "validate", "bad"))
        else:
            outputs.append(Reading("s1", "sensor", None, "t", float(raw.offset), 1.0, raw.received_at, raw))

    def run_batch(self, raws):
        outputs, dead = [], []
        for raw in raws:
            self.run(raw, outputs, dead)
        return outputs, dead

    def flush_counts(self):
        self.flushes += 1


class FakeConsumer:
    """Records pause/resume/seek; consume() hands out what was fetched before a pause."""

    def __init__(self, fetched=(), committed=None):
        self.fetched = list(fetched)
        self.calls = []
        self.committed_offsets = dict(committed or {})  # (topic, partition) -> the group's committed offset

    def committed(self, tps, timeout=None):
        from confluent_kafka import TopicPartition

        return [TopicPartition(t.topic, t.partition, self.committed_offsets.get((t.topic, t.partition), -1001))
                for t in tps]

    def get_watermark_offsets(self, tp, timeout=None, cached=False):
        return (0, 100)

    def pause(self, tps):
        self.calls.append(("pause", [(t.topic, t.partition) for t in tps]))

    def resume(self, tps):
        self.calls.append(("resume", [(t.topic, t.partition) for t in tps]))

    def seek(self, tp):
        self.calls.append(("seek", (tp.topic, tp.partition, tp.offset)))

    def consume(self, n, timeout):
        out, self.fetched = self.fetched[:n], self.fetched[n:]
        return out


class QueueSink(BatchingSink):
    """Only its queue matters here: the source puts batches into it; nothing runs the thread."""

    def __init__(self, name, metrics, queue_max=10):
        super().__init__(SinkConfig(), RetryConfig(), metrics, queue_max)
        self.name = name


def source_with(chain=None, sinks=(), consumer=None, batch_size=10, **cfg) -> ConsumeDispatch:
    metrics = Metrics(CollectorRegistry())
    kafka = KafkaConfig(bootstrap_servers="127.0.0.1:9", **cfg)  # never contacted: the consumer is replaced
    source = ConsumeDispatch(kafka, "test", chain or FakeChain(), [], metrics, batch_size, 1.0)
    source.consumer.close()
    source.consumer = consumer or FakeConsumer()
    source.sinks = [s(metrics) if callable(s) else s for s in sinks]
    return source


def sample(source: ConsumeDispatch, name: str) -> float | None:
    return source.metrics.registry.get_sample_value(name)


# -- to_raw ------------------------------------------------------------------------------------------

def test_to_raw_takes_topic_stamp_and_size_from_the_headers():
    msg = Msg(b'{"v": 1}', [(MQTT_TOPIC_HEADER, b"sensors/dev-1"), (RECEIVED_US_HEADER, b"1700000000654321"),
                            (ORIGINAL_SIZE_HEADER, b"70000")], offset=41, partition=3, key=b"dev-1")
    raw = to_raw(msg)
    assert (raw.mqtt_topic, raw.payload, raw.key, raw.topic, raw.partition, raw.offset, raw.original_size) == (
        "sensors/dev-1", b'{"v": 1}', b"dev-1", "raw", 3, 41, 70000)
    assert raw.received_at == pytest.approx(1_700_000_000.654321, abs=1e-6)


def test_to_raw_without_a_receive_stamp_falls_back_to_the_kafka_timestamp():
    raw = to_raw(Msg(headers=[(MQTT_TOPIC_HEADER, b"sensors/dev-1")]))
    assert raw.received_at == KAFKA_TS_MS / 1000 and raw.original_size == 0
    bare = to_raw(Msg(value=None, headers=None))  # another producer: no headers, a tombstone value
    assert (bare.mqtt_topic, bare.payload, bare.received_at) == ("", b"", KAFKA_TS_MS / 1000)


@pytest.mark.parametrize("stamp", [b"", b"-5", b"12.5", b"1e6", b"\xff\xfe", b" 123"])
def test_to_raw_ignores_a_malformed_receive_stamp_or_size(stamp):
    raw = to_raw(Msg(headers=[(RECEIVED_US_HEADER, stamp), (ORIGINAL_SIZE_HEADER, stamp),
                              (MQTT_TOPIC_HEADER, b"sensors/\xff")]))
    assert raw.received_at == KAFKA_TS_MS / 1000 and raw.original_size == 0
    assert raw.mqtt_topic == "sensors/\ufffd"  # undecodable bytes are replaced, not raised


@pytest.mark.parametrize("name", [RECEIVED_US_HEADER, ORIGINAL_SIZE_HEADER, MQTT_TOPIC_HEADER])
def test_to_raw_ignores_a_header_without_a_value(name):
    # Kafka allows a header with a null value (confluent_kafka gives None), e.g. from another producer.
    raw = to_raw(Msg(headers=[(name, None)]))
    assert (raw.mqtt_topic, raw.received_at, raw.original_size) == ("", KAFKA_TS_MS / 1000, 0)


# -- _handle: one consumed batch ----------------------------------------------------------------------

def test_a_batch_is_routed_by_kind_to_every_sink_with_the_next_offset_per_partition():
    chain = FakeChain()
    source = source_with(chain, sinks=[lambda m: QueueSink("postgres", m), lambda m: QueueSink("redis", m)])
    msgs = [Msg(b"1", offset=10, partition=0), Msg(b"log", offset=11, partition=0), Msg(b"bad", offset=5, partition=1),
            Msg(b"2", offset=12, partition=0)]
    source._handle(msgs)
    batches = [s.queue.get_nowait() for s in source.sinks]
    assert batches[0] is batches[1]  # one batch, shared: it is done once every sink holds it
    b = batches[0]
    assert [r.value for r in b.readings] == [10.0, 12.0]
    assert [type(r) for r in b.logs] == [LogRecord] and [d.reason for d in b.dead] == ["not_a_number"]
    assert b.offsets == {("raw", 0): 13, ("raw", 1): 6}
    assert len(source.inflight) == 1 and not b.done.is_set()
    b.sink_done()
    b.sink_done()
    assert source.inflight.completed() == {("raw", 0): 13, ("raw", 1): 6}
    assert chain.flushes == 1
    assert sample(source, "pipeline_kafka_messages_consumed_total") == 4


def test_partition_eof_and_transient_errors_are_skipped_and_a_fatal_one_raises():
    chain = FakeChain()
    source = source_with(chain, sinks=[lambda m: QueueSink("postgres", m)])
    source._handle([Msg(error=Err(KafkaError._PARTITION_EOF)), Msg(b"1", offset=3),
                    Msg(error=Err(KafkaError._TRANSPORT))])
    batch = source.sinks[0].queue.get_nowait()
    assert [r.offset for r in chain.seen] == [3] and batch.offsets == {("raw", 0): 4}
    with pytest.raises(KafkaException):
        source._handle([Msg(b"2", offset=4), Msg(error=Err(KafkaError._FATAL, fatal=True))])
    assert source.sinks[0].queue.empty()  # nothing of the failed call reached a sink


# -- back-pressure -------------------------------------------------------------------------------------

def test_a_full_sink_queue_pauses_the_partitions_then_resumes_and_rewinds_what_was_fetched_meanwhile():
    from confluent_kafka import TopicPartition

    # Fetched before the pause took effect: read again after the resume, from the first of each partition.
    fetched = [Msg(b"x", offset=20, partition=0), Msg(b"x", offset=21, partition=0), Msg(b"x", offset=7, partition=2)]
    consumer = FakeConsumer(fetched)
    source = source_with(sinks=[lambda m: QueueSink("postgres", m, queue_max=1)], consumer=consumer, batch_size=2)
    source.assigned = [TopicPartition("raw", 0), TopicPartition("raw", 2)]
    sink = source.sinks[0]
    older = Batch(["r"] * 1000, [], {}, 1)  # a full write (the sink's queue holds queue_max of them)
    sink.queue.put_nowait(older)  # the sink's service is slow: its queue is full
    paused_seen, drained = [], []

    def drain_later():  # the sink catches up a moment after the pause
        paused_seen.append(sample(source, "pipeline_kafka_consumer_paused"))
        drained.append(sink.queue.get(timeout=5))

    consumer.pause = lambda tps, orig=consumer.pause: (orig(tps), threading.Timer(0.3, drain_later).start())
    source._handle([Msg(b"1", offset=19)])
    assert paused_seen == [1] and drained == [older]
    assert sink.queue.get_nowait().offsets == {("raw", 0): 20}
    assert consumer.calls[0] == ("pause", [("raw", 0), ("raw", 2)])
    assert consumer.calls[1] == ("resume", [("raw", 0), ("raw", 2)])
    assert sorted(c[1] for c in consumer.calls[2:]) == [("raw", 0, 20), ("raw", 2, 7)]
    assert sample(source, "pipeline_kafka_consumer_paused") == 0


def test_stopping_while_paused_gives_the_batch_to_no_later_sink_and_still_resumes():
    from confluent_kafka import TopicPartition

    consumer = FakeConsumer()
    source = source_with(sinks=[lambda m: QueueSink("postgres", m, queue_max=1), lambda m: QueueSink("redis", m)],
                         consumer=consumer)
    source.assigned = [TopicPartition("raw", 0)]
    full, later = source.sinks
    full.queue.put_nowait(Batch(["r"] * 1000, [], {}, 1))  # a full write: its queue is full
    threading.Timer(0.3, source.stop_event.set).start()
    source._handle([Msg(b"1", offset=0)])
    assert later.queue.empty()  # the batch stays uncommitted: Kafka redelivers it after the restart
    assert [c[0] for c in consumer.calls] == ["pause", "resume"]
    assert sample(source, "pipeline_kafka_consumer_paused") == 0


# -- offset continuity ------------------------------------------------------------------------------------

def test_a_hole_after_the_committed_offset_is_fetched_again_in_order():
    from confluent_kafka import TopicPartition

    chain = FakeChain()
    consumer = FakeConsumer(committed={("raw", 0): 10})
    source = source_with(chain, sinks=[lambda m: QueueSink("postgres", m)], consumer=consumer, assignment="group")
    source._on_assign(None, [TopicPartition("raw", 0), TopicPartition("raw", 1)])
    source._handle([Msg(b"1", offset=10), Msg(b"1", offset=11), Msg(b"1", offset=15), Msg(b"1", offset=16),
                    Msg(b"1", offset=0, partition=1)])  # partition 1 had no commit: it starts at its log start, 0
    assert source.sinks[0].queue.get_nowait().offsets == {("raw", 0): 12, ("raw", 1): 1}
    source._refetch()
    assert consumer.calls == [("seek", ("raw", 0, 12))]
    source._handle([Msg(b"1", offset=o) for o in range(12, 17)])
    assert source.sinks[0].queue.get_nowait().offsets == {("raw", 0): 17}
    assert [m.offset for m in chain.seen if m.partition == 0] == [10, 11, 12, 13, 14, 15, 16]  # once each, in order
    get = source.metrics.registry.get_sample_value
    assert get("pipeline_kafka_offset_gaps_total", {"event": "detected"}) == 1
    assert get("pipeline_kafka_offset_gaps_total", {"event": "refetched"}) == 1
    assert sample(source, "pipeline_kafka_offset_gap_dropped_total") == 2
    assert source.status()[0]


def test_a_hole_given_up_holds_the_commit_and_makes_the_consumer_not_ready():
    from confluent_kafka import TopicPartition

    consumer = FakeConsumer(committed={("raw", 0): 10})
    source = source_with(sinks=[lambda m: QueueSink("postgres", m, queue_max=100)], consumer=consumer,
                         gap_refetch_attempts=1, gap_refetch_wait_s=0)
    source._on_assign(None, [TopicPartition("raw", 0)])
    source._handle([Msg(b"1", offset=10), Msg(b"1", offset=14)])
    source._refetch()
    source._handle([Msg(b"1", offset=14), Msg(b"1", offset=15)])  # still missing after the fetch again: given up
    batches = [source.sinks[0].queue.get_nowait() for _ in range(2)]
    for b in batches:
        b.sink_done()
    assert source.continuity.cap(source.inflight.completed()) == {("raw", 0): 11}
    ok, detail = source.status()
    assert not ok and "partition 0 of raw: offsets 11-13 (3 records) missing after 1 fetches" in detail
    assert source.metrics.registry.get_sample_value("pipeline_kafka_offset_gap_missing", {"partition": "0"}) == 3
    [reading] = source.gap_readings()
    assert (reading.sensor_id, reading.metric, reading.value) == ("kafka:raw:0", "kafka_offset_gap", 3.0)


# -- readiness -----------------------------------------------------------------------------------------

def test_status_reports_a_stalled_consumer_as_not_ready_and_recovers_with_an_assignment():
    from confluent_kafka import TopicPartition

    source = source_with(assignment="group", assignment_timeout_s=30)
    ok, detail = source.status()
    assert ok and "no partitions assigned" in detail
    w = source.watchdog
    w.assignment(0.0, False)
    w.observe(5.0, lag=10, committed_total=0)
    assert w.observe(40.0, lag=12, committed_total=0) is not None
    ok, detail = source.status()
    assert not ok and "no partitions for 40 s while 12 message(s) wait" in detail and "group realtime-pipeline" in detail
    source._on_assign(None, [TopicPartition("raw", 0), TopicPartition("raw", 1)])
    assert source.status() == (True, "2 partition(s) assigned")


def test_status_in_single_instance_mode_says_so():
    from confluent_kafka import TopicPartition

    source = source_with(assignment="single")
    source.assigned = [TopicPartition("raw", p) for p in range(4)]
    assert source.status() == (True, "4 partition(s) assigned (single-instance)")
