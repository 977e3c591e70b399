"""The stage chain's batch interface: native and per-record stages, a batch that fails as a whole, message order,
one dead letter per message and kind."""
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from pipeline.observability.metrics import Metrics
from pipeline.records import FAILED, INVALID, Invalid, LogRecord, RawMessage, Reading
from pipeline.runtime.chain import StageChain
from pipeline.runtime.stage import RecordStage, Refused
from tests.unit.helpers import NOW, chain, raw


@dataclass
class Rec:
    metric: str
    value: int
    source: RawMessage


def msg(payload: str, offset: int, device: str = "d") -> RawMessage:
    return RawMessage(f"t/{device}", payload.encode(), 0.0, device.encode(), "raw", 0, offset)


class Split(RecordStage):
    """Per record: "a=1,b=2" -> one Rec per pair."""

    name = "split"

    def process(self, m: RawMessage) -> list:
        if m.payload == b"{oops":
            raise Invalid("invalid_json", "not a pair list")
        return [Rec(k, int(v), m) for k, v in (pair.split("=") for pair in m.payload.decode().split(","))]


class Double:
    """Native batch stage: values doubled in one pass, negatives refused, a value of 13 a processing failure."""

    name = "double"
    accepts = Rec

    def __init__(self):
        self.calls = []

    def process_batch(self, items: list, refused: Refused) -> list:
        self.calls.append(len(items))
        out = []
        for r in items:
            if r.value < 0:
                refused.add(r, Invalid("negative", f"{r.metric} is {r.value}"))
            elif r.value == 13:
                refused.add(r, RuntimeError("unlucky"))
            else:
                r.value *= 2
                out.append(r)
        return out


class Fragile(Double):
    """Native batch stage refusing negatives, which raises as a whole (after its refusals) when a record is 7."""

    name = "fragile"

    def process_batch(self, items: list, refused: Refused) -> list:
        self.calls.append(len(items))
        for r in items:
            if r.value < 0:
                refused.add(r, Invalid("negative"))
        if any(r.value == 7 for r in items):
            raise KeyError("seven")
        return [r for r in items if r.value >= 0]


def new_chain(*stages):
    metrics = Metrics(CollectorRegistry())
    return StageChain(stages, metrics), metrics


def test_a_native_batch_stage_gets_the_whole_batch_in_one_call_and_reports_refusals_by_record():
    double = Double()
    ch, metrics = new_chain(Split(), double)
    raws = [msg("a=1,b=-2", 1), msg("a=3", 2), msg("a=13,b=-1,c=-5", 3)]
    out, dead = ch.run_batch(raws)
    ch.flush_counts()
    assert double.calls == [6]
    assert [(r.source.offset, r.metric, r.value) for r in out] == [(1, "a", 2), (2, "a", 6)]
    assert [(d.source.offset, d.kind, d.reason, d.refused) for d in dead] == [
        (1, INVALID, "negative", {"b": "negative"}),
        (3, FAILED, "processing_error", {"a": "processing_error"}),
        (3, INVALID, "negative", {"b": "negative", "c": "negative"}),
    ]
    sample = metrics.registry.get_sample_value
    assert sample("pipeline_stage_records_out_total", {"stage": "split"}) == 6
    assert sample("pipeline_stage_records_out_total", {"stage": "double"}) == 2
    assert sample("pipeline_invalid_records_total", {"stage": "double", "reason": "negative"}) == 3


def test_a_per_record_stage_is_looped_and_a_record_it_raises_on_is_refused_alone():
    class Check(RecordStage):
        name = "check"
        accepts = Rec

        def process(self, r):
            if r.value == 0:
                raise ZeroDivisionError("zero")
            return [] if r.value == 5 else [r]

    class Plain:  # no base class, only `process`: the chain loops it all the same
        name = "plain"
        accepts = Rec

        def process(self, r):
            if r.value < 0:
                raise Invalid("negative")
            return [r, r]

    ch, _ = new_chain(Split(), Check(), Plain())
    out, dead = ch.run_batch([msg("a=1,b=0,c=5", 1), msg("{oops", 2), msg("a=-1,b=2", 3)])
    assert [(r.source.offset, r.metric) for r in out] == [(1, "a"), (1, "a"), (3, "b"), (3, "b")]
    assert [(d.source.offset, d.stage, d.reason, d.metric) for d in dead] == [
        (1, "check", "processing_error", "b"), (2, "split", "invalid_json", None), (3, "plain", "negative", "a")]
    assert "ZeroDivisionError: zero" in dead[0].error


def test_a_native_stage_raising_on_the_batch_runs_again_per_record_and_refuses_only_the_bad_one():
    fragile = Fragile()
    ch, _ = new_chain(Split(), fragile)
    out, dead = ch.run_batch([msg("a=1,b=2", 1), msg("a=7", 2), msg("a=3", 3), msg("a=-4", 4)])
    assert fragile.calls == [5, 1, 1, 1, 1, 1]  # the batch, then each record alone
    assert [(r.source.offset, r.metric, r.value) for r in out] == [(1, "a", 1), (1, "b", 2), (3, "a", 3)]
    # The refusals reported in the failed call are forgotten: the record of offset 4 is refused once, alone.
    assert [(d.source.offset, d.kind, d.reason, d.error) for d in dead] == [
        (2, FAILED, "processing_error", "KeyError: 'seven'"), (4, INVALID, "negative", "negative")]


def test_outputs_keep_message_order_with_readings_and_logs_interleaved_and_match_message_by_message():
    def batch():
        return [
            raw("sensors/d1", {"readings": {"temperature": 20, "humidity": 40}}, offset=1),
            raw("logs/app", {"level": "INFO", "message": "one"}, offset=2),
            raw("sensors/d2", {"metric": "temperature", "value": "warm"}, offset=3),
            raw("sensors/d1", {"readings": {"temperature": 21, "humidity": "x", "pressure": "y"}}, offset=4),
            raw("logs/app", {"level": "loud", "message": "two"}, offset=5),
            raw("sensors/d1/temperature", "22", offset=6),
            raw("logs/app", {"level": "ERROR", "message": "three"}, offset=7),
            raw("sensors/d2", b"{oops", offset=8),
            raw("sensors/d2", {"metric": "temperature", "value": 23}, offset=9),
        ]

    ch, metrics = chain()
    out, dead = ch.run_batch(batch())
    ch.flush_counts()
    assert [(type(o).__name__, o.source.offset) for o in out] == [
        ("Reading", 1), ("Reading", 1), ("LogRecord", 2), ("Reading", 4), ("Reading", 6), ("LogRecord", 7),
        ("Reading", 9)]
    assert [r.value for r in out if isinstance(r, Reading)] == [20.0, 40.0, 21.0, 22.0, 23.0]
    assert [m.message for m in out if isinstance(m, LogRecord)] == ["one", "three"]
    assert [(d.source.offset, d.stage, d.reason) for d in dead] == [
        (3, "validate", "value_not_number"), (4, "validate", "value_not_number"), (5, "validate_log", "log_level_invalid"),
        (8, "decode", "invalid_json")]
    assert dead[1].refused == {"humidity": "value_not_number", "pressure": "value_not_number"}

    one_by_one, single_metrics = chain()  # a fresh chain: the limits and lateness stages keep state
    single_out, single_dead = [], []
    for m in batch():
        one_by_one.run(m, single_out, single_dead)
    one_by_one.flush_counts()
    assert [(type(o), o.source.offset, getattr(o, "metric", None)) for o in out] == \
           [(type(o), o.source.offset, getattr(o, "metric", None)) for o in single_out]
    assert [(d.source.offset, d.kind, d.reason, d.stage, d.error, d.refused) for d in dead] == \
           [(d.source.offset, d.kind, d.reason, d.stage, d.error, d.refused) for d in single_dead]
    for stage, n in {"decode": 11, "validate": 5, "transform": 5, "validate_log": 2, "limits": 5}.items():
        for m in (metrics, single_metrics):
            assert m.registry.get_sample_value("pipeline_stage_records_out_total", {"stage": stage}) == n, stage


def test_refusals_of_one_message_from_several_stages_merge_into_one_letter_in_message_order():
    ch, _ = chain({"aggregation": {"enabled": True, "grace_s": 0, "max_lateness_s": 60}})
    readings = {"temperature": 20, "humidity": "wet"}
    out, dead = ch.run_batch([
        raw("sensors/d1", {"readings": {"temperature": 1}, "timestamp": NOW}, offset=10),
        raw("sensors/d1", {"readings": readings, "timestamp": NOW - 3600}, offset=11),  # temperature late
        raw("sensors/d2", {"readings": {"pressure": "high"}, "timestamp": NOW}, offset=12),
    ])
    assert [(r.source.offset, r.metric) for r in out] == [(10, "temperature")]
    assert [(d.source.offset, d.reason, d.refused) for d in dead] == [
        (11, "value_not_number", {"humidity": "value_not_number", "temperature": "late"}),
        (12, "value_not_number", {"pressure": "value_not_number"})]


def test_an_empty_batch_and_a_batch_every_stage_passes_by():
    ch, _ = new_chain(Double())
    assert ch.run_batch([]) == ([], [])
    raws = [msg("a=1", 1)]
    assert ch.run_batch(raws) == (raws, [])  # no stage takes a RawMessage: it goes on unchanged


def test_a_refused_record_without_a_source_is_still_a_letter_and_in_a_batch_of_one_names_its_message():
    class Bare:  # builds records that do not carry their message
        name = "bare"

        def process_batch(self, items, refused):
            for m in items:
                refused.add(object(), Invalid("bare", m.payload.decode()))
            return []

    ch, _ = new_chain(Bare())
    [one] = ch.run_batch([msg("x", 1)])[1]
    assert (one.source.offset, one.reason) == (1, "bare")
    letters = ch.run_batch([msg("x", 1), msg("y", 2)])[1]
    assert [(d.source.mqtt_topic, d.error) for d in letters] == [("", "2 records refused; -: bare: x; -: bare: y")]


def test_idle_reaches_the_stages_with_timed_work_only():
    class Timed(Split):
        name = "timed"
        seen: list = []

        def idle(self, now: float) -> None:
            self.seen.append(now)

    timed = Timed()
    c = StageChain([Split(), timed], Metrics(CollectorRegistry()))
    c.idle(12.5)
    assert timed.seen == [12.5]
