"""Per-sensor state follows partition ownership: the alert evaluator and the window tracker drop what they
no longer own and evaluate or close only what they own (no database: nothing to load in these cases)."""
from prometheus_client import CollectorRegistry

from pipeline.app.build import alert_sections
from pipeline.config import RedisConfig, Secret, parse
from pipeline.observability.metrics import Metrics
from pipeline.records import RawMessage, Reading
from pipeline.runtime.batch import Batch
from pipeline.runtime.ownership import sensor_partition
from pipeline.operators.windows.aggregator import WindowAggregator
from pipeline.operators.alerts.runner import AlertRunner
from pipeline.operators.windows.tracker import Window

CFG = parse({"thresholds": {"temperature": {"warning": {"max": 40}}}, "detection": {"offline_after_s": 0}}, {})


def reading(sensor: str, value: float, ts: float = 1000.0) -> Reading:
    partition = sensor_partition(sensor, CFG.kafka.partitions)
    return Reading(sensor, "sensor", None, "temperature", value, ts, ts,
                   RawMessage(f"sensors/{sensor}", b"", ts, sensor.encode(), "raw", partition, 0, 0))


def sensors_on(partition: int, n: int = 2) -> list[str]:
    return [s for s in (f"dev-{i}" for i in range(100)) if sensor_partition(s, CFG.kafka.partitions) == partition][:n]


def alert_sink() -> AlertRunner:
    return AlertRunner(alert_sections(CFG), Secret(""), Secret(""), Metrics(CollectorRegistry()))


def test_revoked_sensors_are_forgotten_and_kept_ones_stay():
    sink = alert_sink()
    mine, theirs = sensors_on(0), sensors_on(1)
    sink.partitions_assigned({0, 1})
    out = sink.take(Batch([reading(s, 50.0) for s in mine + theirs], [], {}, 1))
    ev = sink.evaluator
    assert len(out) == 4 and len(ev.book.open) == 4
    sink.partitions_revoked({1})
    assert {k[0] for k in ev.book.open} == set(mine)
    assert set(ev.last_seen) == set(mine) and ev.sensors() == set(mine)
    detector_keys = {k[0] for k in ev.series} | {k[0] for d in ev.detectors for k in d.since}
    assert not detector_keys & set(theirs)


def test_before_the_first_assignment_nothing_is_owned_once_the_daemon_says_so():
    sink = alert_sink()
    sink.take(Batch([reading("dev-1", 50.0)], [], {}, 1))
    sink.partitions_assigned(set())  # what the daemon does before the consumer joins the group
    assert sink.evaluator.book.open == {} and sink.evaluator.sensors() == set()


def test_aggregator_closes_only_windows_of_owned_partitions():
    agg = WindowAggregator(CFG.aggregation, RedisConfig(), Secret(""), Metrics(CollectorRegistry()), clock=lambda: 10_000.0)
    closed = []
    agg._close = lambda due: closed.extend(due)  # noqa: SLF001 - the database part is tested in integration
    w = Window("1m", 0, 60_000_000)
    for p in (0, 1):
        agg.tracker.load(p, w, f"s{p}", "temperature", now=0.0)  # idle since 0: due by the wall clock
    agg.partitions_assigned({0, 1})
    agg.partitions_revoked({1})
    agg.close_due()
    assert [d.partition for d in closed] == [0]
    assert all(k[0] == 0 for k in agg.tracker.pending)


def test_aggregator_rolls_longer_periods_up_from_shorter_closed_rows_unless_loaded_from_the_database():
    from pipeline.operators.windows.aggregator import rollup_sources
    from pipeline.operators.windows.store import CLOSE_FROM_READINGS_BY_KEY, CLOSE_FROM_READINGS_BY_TIME, CLOSE_FROM_ROLLUP
    assert rollup_sources({"10s": 10, "1m": 60, "5m": 300, "7m": 420, "1h": 3600}) == {"1m": "10s", "5m": "1m",
                                                                                       "7m": "1m", "1h": "5m"}
    agg = WindowAggregator(CFG.aggregation, RedisConfig(), Secret(""), Metrics(CollectorRegistry()))
    one, many = [("s1", "temperature")], [(f"s{i}", "temperature") for i in range(100)]
    w1m, w5m, w1h = Window("1m", 0, 60_000_000), Window("5m", 0, 300_000_000), Window("1h", 0, 3_600_000_000)
    assert agg.close_statement(w1m, one)[0] == CLOSE_FROM_READINGS_BY_KEY  # a correction: by the readings' index
    assert agg.close_statement(w1m, many)[0] == CLOSE_FROM_READINGS_BY_TIME  # every sensor: one pass over the minute
    sql, params = agg.close_statement(w1h, many)
    assert sql == CLOSE_FROM_ROLLUP and params["sub_period"] == "5m" and params["sensors"][0] == "s0"
    agg.from_readings.add(w5m)  # pending in the database at start: its shorter rows may be missing
    assert agg.close_statement(w5m, one)[0] == CLOSE_FROM_READINGS_BY_KEY


class _FakeStore:
    """The alert store's reading side: records what the runner asks for."""

    pool = object()

    def __init__(self, open_alerts):
        self.open_alerts, self.asked, self.whole_table_reads = open_alerts, [], 0

    def load_open_for(self, sensor_ids):
        self.asked.append(list(sensor_ids))
        return [a for a in self.open_alerts if a.sensor_id in sensor_ids], [(s, "sensor") for s in sensor_ids]

    def load_open(self, mine):
        self.whole_table_reads += 1
        return [a for a in self.open_alerts if mine(a.sensor_id)], []


def test_sensors_keyed_off_their_guessed_partition_are_loaded_in_one_query_per_batch():
    """Readings keyed by something other than the sensor id (a Sparkplug edge node, a mapping's device level) land
    on a partition the CRC32 guess did not load: their open alerts are read for the whole batch at once, by id,
    never by reading every open alert once per sensor."""
    from pipeline.operators.alerts.lifecycle import Alert

    sink = alert_sink()
    sensors = [f"node-{i}" for i in range(200)]
    misplaced = [s for s in sensors if sensor_partition(s, CFG.kafka.partitions) != 0]
    store = _FakeStore([Alert(s, "temperature", "threshold_warning", "warning", 900.0, "old", i + 1)
                        for i, s in enumerate(misplaced[:5])])
    sink.store = store
    sink.partitions_assigned({0, 1, 2, 3})
    store.whole_table_reads = 0
    batch = [Reading(s, "sensor", None, "temperature", 20.0, 1000.0, 1000.0,
                     RawMessage(f"spBv1.0/g/DDATA/{s}", b"", 1000.0, b"edge", "raw", 0, i, 0))
             for i, s in enumerate(sensors)]
    sink.take(Batch(batch, [], {}, 1))
    assert store.asked == [misplaced] and store.whole_table_reads == 0
    assert {k[0] for k in sink.evaluator.book.open} >= set(misplaced[:5])
    sink.take(Batch(batch, [], {}, 1))  # known now: nothing asked again
    assert len(store.asked) == 1
