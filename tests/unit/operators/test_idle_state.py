"""Per-series state is released after limits.state_idle_s without readings (injected clocks), except what an open
alert needs; a series that returns is rebuilt and judged like a new one."""
from prometheus_client import CollectorRegistry

from pipeline.app.build import alert_sections
from pipeline.config import RedisConfig, Secret, parse
from pipeline.observability.metrics import Metrics
from pipeline.operators.alerts.detectors import OUT_N, RUN_N
from pipeline.operators.alerts.evaluator import AlertEvaluator
from pipeline.operators.alerts.lifecycle import Alert
from pipeline.stages.limits import LimitFilter, SensorRegistry
from pipeline.operators.windows.aggregator import WindowAggregator
from pipeline.operators.windows.tracker import US, Window
from pipeline.records import Invalid, Reading
from pipeline.runtime.idle import IdleSweep
from pipeline.runtime import memory
from pipeline.runtime.memory import RELEASED_FROM

IDLE = 1000.0
T0 = 1_760_000_000.0
CFG = parse({"limits": {"state_idle_s": IDLE},
             "thresholds": {"temperature": {"warning": {"max": 40}}, "humidity": {"warning": {"max": 40}}},
             "detection": {"offline_after_s": 0,
                           "metrics": {"temperature": {"outlier": {"z_warning": 4, "min_samples": 3},
                                                       "stuck": {"count": 50}}}},
             "alerts": {"clear_readings": 1, "flap": {"count": 3, "window_s": 600}}}, {})


def reading(sensor: str, value: float, ts: float, metric: str = "temperature", received_at: float | None = None) -> Reading:
    return Reading(sensor, "sensor", None, metric, value, ts, ts if received_at is None else received_at)


def series_state(ev: AlertEvaluator) -> set:
    """Every (sensor, metric) the evaluator holds any per-series state for."""
    keys = {k for d in ev.detectors for name in ("since", "series") for k in getattr(d, name)}
    keys |= set(ev.rules._cache) | set(ev.series) | {(k[0], k[1]) for k in ev.book.cycles}
    return keys


def test_the_sweep_runs_at_most_every_tenth_of_the_idle_time():
    sweep = IdleSweep(1000.0)
    assert [sweep.due(t) for t in (0.0, 50.0, 60.0, 100.0, 121.0)] == [False, False, True, False, True]


def test_registry_releases_idle_sensors_so_max_sensors_counts_active_ones():
    reg = SensorRegistry(max_sensors=2, max_metrics_per_sensor=5)
    assert reg.admit("a", "t", now=0.0) is None and reg.admit("b", "t", now=0.0) is None
    assert reg.admit("a", "h", now=600.0) is None  # a stays active
    assert reg.admit("c", "t", now=600.0) == "too_many_sensors"
    assert reg.evict_idle(now=1200.0, idle_s=IDLE) == 1  # b: no reading since 0
    assert len(reg) == 1 and reg.metrics_of("b") == () and reg.metrics_of("a") == ("t", "h")
    assert reg.admit("c", "t", now=1200.0) is None  # room for a new active sensor
    assert reg.admit("b", "t", now=1200.0) == "too_many_sensors"  # b returns as a new sensor, counted again


def test_preloaded_sensors_count_as_seen_at_start_and_are_released_if_silent():
    now = [0.0]
    reg = SensorRegistry(max_sensors=5, max_metrics_per_sensor=5, clock=lambda: now[0])
    reg.preload(["stored-1", "stored-2"], [("stored-1", "t")])
    assert reg.evict_idle(now=IDLE - 1, idle_s=IDLE) == 0
    assert reg.evict_idle(now=IDLE + 1, idle_s=IDLE) == 2 and len(reg) == 0


def test_limit_filter_releases_idle_sensors_as_readings_pass():
    f = LimitFilter(max_sensors=1, max_metrics_per_sensor=5, state_idle_s=IDLE)
    assert f.process(reading("once", 1.0, T0, received_at=T0))
    try:
        f.process(reading("other", 1.0, T0, received_at=T0 + 1))
        raise AssertionError("a second sensor within the idle time must be refused")
    except Invalid as err:
        assert err.reason == "too_many_sensors"
    # Received IDLE + 200 s later: "once" has been silent for longer than state_idle_s.
    f.process(reading("other", 1.0, T0, received_at=T0 + IDLE + 200))  # admitted: the sweep released "once" first
    assert len(f.registry) == 1 and f.registry.metrics_of("other") == ("temperature",)


def test_limit_filter_releases_idle_sensors_while_no_reading_comes():
    f = LimitFilter(max_sensors=10, max_metrics_per_sensor=5, state_idle_s=IDLE)
    assert f.process(reading("flood", 1.0, T0, received_at=T0))
    f.idle(T0 + IDLE - 1)  # not idle for long enough yet
    assert len(f.registry) == 1
    f.idle(T0 + IDLE + 200)  # the consumer's poll came back empty: the sweep runs without a reading
    assert len(f.registry) == 0 and "flood" not in f.labels
    f.idle(T0 + IDLE + 201)  # and not again before its next turn
    assert f._sweep_at > T0 + IDLE + 201  # noqa: SLF001


def test_open_mode_labels_of_released_sensors_go_with_them_and_the_tables_stay():
    # The labels this filter filled in for one-shot ids would otherwise outlive the sensors they describe.
    f = LimitFilter(max_sensors=10, max_metrics_per_sensor=5, state_idle_s=IDLE)
    f.use({"registered": ("boiler", "cellar")})
    f.process(reading("registered", 1.0, T0, received_at=T0))
    f.process(reading("once", 1.0, T0, received_at=T0))
    assert set(f.labels) == {"registered", "once"}
    f.process(reading("steady", 1.0, T0, received_at=T0 + IDLE + 200))  # the sweep releases the two silent ones
    assert set(f.labels) == {"registered", "steady"}


def test_evaluator_releases_idle_series_and_keeps_those_with_an_open_alert():
    ev = AlertEvaluator(alert_sections(CFG).evaluator)
    ev.evaluate([reading("quiet", 20.0 + i % 2, T0 + i) for i in range(5)], now=0.0)
    ev.evaluate([reading("hot", 50.0, T0)], now=0.0)  # opens a threshold alert
    ev.evaluate([reading("busy", 20.0, T0), reading("busy", 21.0, T0 + 1, "humidity")], now=0.0)
    ev.evaluate([reading("busy", 20.5, T0 + 900)], now=900.0)  # busy/temperature active, busy/humidity not
    assert ("quiet", "temperature") in series_state(ev) and ("hot", None, "threshold") not in ev.book.open
    assert ("hot", "temperature", "threshold") in ev.book.open
    assert ev.evict_idle(now=IDLE + 1) == 2  # quiet/temperature and busy/humidity
    held = series_state(ev)
    assert ("quiet", "temperature") not in held and ("busy", "humidity") not in held
    assert ("hot", "temperature") in held and ("busy", "temperature") in held
    assert "quiet" not in ev.sensor_info and "busy" in ev.sensor_info and "hot" in ev.sensor_info
    assert ev.evict_idle(now=10 * IDLE) == 1  # busy/temperature; hot keeps its state for its open alert
    assert {k[0] for k in series_state(ev)} == {"hot"} and set(ev.sensor_info) == {"hot"}


def test_an_offline_alert_open_for_longer_than_the_idle_time_releases_its_sensor():
    cfg = parse({"limits": {"state_idle_s": IDLE}, "thresholds": {"temperature": {"warning": {"max": 40}}},
                 "detection": {"offline_after_s": 60}}, {})
    ev = AlertEvaluator(alert_sections(cfg).evaluator)
    ev.evaluate([reading("gone", 20.0, T0), reading("back", 50.0, T0)], now=0.0)  # back: a threshold alert too
    ev.evaluate([reading("here", 20.0, T0)], now=0.0)
    out = ev.tick(now=61.0)
    assert sorted(t.alert.sensor_id for t in out if t.alert.type == "offline") == ["back", "gone", "here"]
    ev.evaluate([reading("here", 20.0, T0 + 500)], now=500.0)  # here returns within the idle time: resolved
    assert ("here", None, "offline") not in ev.book.open
    ev.evict_idle(now=61.0 + IDLE - 1)  # not yet: open for less than the idle time
    assert ("gone", None, "offline") in ev.book.open and ev.released_open == 0
    ev.evict_idle(now=61.0 + IDLE + 1)
    assert ev.released_open == 2  # gone and back, each with its open alerts (still open in the database)
    assert {k[0] for k in ev.book.open} == set() and ev.sensors() == {"here"}
    assert {k[0] for k in series_state(ev)} <= {"here"}
    # back returns: the runner loads its open alerts from the database first, then this reading resolves them
    alerts = [Alert("back", None, "offline", "warning", 61.0, "m", 7), Alert("back", "temperature", "threshold",
                                                                               "warning", 0.0, "m", 8)]
    ev.load(alerts, (), now=2000.0)
    out = ev.evaluate([reading("back", 20.0, T0 + 2000)], now=2000.0)
    assert [(t.event, t.alert.id) for t in out] == [("resolved", 7)]  # the threshold clears by its own rule


def test_flap_history_of_an_idle_series_is_released():
    ev = AlertEvaluator(alert_sections(CFG).evaluator)
    for i, v in enumerate((50.0, 20.0, 50.0, 20.0)):  # opened and resolved twice: two flap cycles noted
        ev.evaluate([reading("f", v, T0 + i, "humidity")], now=0.0)
    assert ("f", "humidity", "threshold") in ev.book.cycles and ev.book.open == {}
    ev.evict_idle(now=IDLE + 1)
    assert ev.book.cycles == {} and series_state(ev) == set()


def test_a_returning_series_is_rebuilt_and_judged_again():
    ev = AlertEvaluator(alert_sections(CFG).evaluator)
    ev.evaluate([reading("s", 20.0 + (i % 3) * 0.1, T0 + i) for i in range(10)], now=0.0)
    assert ev.series[("s", "temperature")][OUT_N] == 10  # outlier statistics of 10 readings
    ev.evict_idle(now=IDLE + 1)
    assert series_state(ev) == set()
    # It returns: the outlier detector warms up again (as after a restart), the threshold still alerts.
    ev.evaluate([reading("s", 20.0, T0 + 2000)], now=IDLE + 2)
    assert ev.series[("s", "temperature")][OUT_N] == 1
    out = ev.evaluate([reading("s", 55.0, T0 + 2001)], now=IDLE + 3)
    assert [(t.event, t.alert.type) for t in out] == [("opened", "threshold")]


def aggregator(now):
    cfg = parse({"aggregation": {"periods": ["1m", "5m"]}}, {}).aggregation
    return WindowAggregator(cfg, RedisConfig(), Secret(""), Metrics(CollectorRegistry()), clock=lambda: now[0],
                            state_idle_s=IDLE)


def test_running_values_are_released_once_idle_and_closed_and_kept_while_pending():
    now = [0.0]
    agg = aggregator(now)
    ts = round(T0 * US)
    agg.partials.add("gone", "t", ts, 1.0, 0.0)
    agg.partials.add("open", "t", ts, 2.0, 0.0)
    agg.partials.add("live", "t", ts, 3.0, 0.0)
    agg.partials.add("live", "t", ts + US, 4.0, 900.0)  # a later reading of the same windows
    agg.tracker.add(0, Window("1m", ts - ts % (60 * US), ts - ts % (60 * US) + 60 * US), "open", "t")
    assert agg.evict_idle(now=IDLE + 1) == 1  # gone (all its periods); open: a window of it is still pending
    assert {k[0] for k in agg.partials.acc} == {"open", "live"}
    # A returning series starts its windows again from its new readings.
    agg.partials.add("gone", "t", ts + 3600 * US, 7.0, IDLE + 2)
    assert agg.partials.fields("gone", ["t"])["t:1m"]["count"] == 1


def test_a_pending_window_rolled_up_from_shorter_rows_does_not_hold_its_series():
    now = [0.0]
    agg = aggregator(now)  # 1m and 5m: a 5m window's row is rolled up from its closed 1m rows
    ts = round(T0 * US)
    five, one = 300 * US, 60 * US
    long_window = Window("5m", ts - ts % five, ts - ts % five + five)
    for sensor in ("rolled", "short", "reloaded"):
        agg.partials.add(sensor, "t", ts, 1.0, 0.0)
    agg.tracker.add(0, long_window, "rolled", "t")  # only its 5m window is left pending
    agg.tracker.add(0, Window("1m", ts - ts % one, ts - ts % one + one), "short", "t")
    reloaded = Window("5m", long_window.start - five, long_window.start)
    agg.tracker.add(0, reloaded, "reloaded", "t")
    agg.from_readings.add(reloaded)  # found pending at start-up: closed from the readings
    assert agg.evict_idle(now=IDLE + 1) == 1
    assert {k[0] for k in agg.partials.acc} == {"short", "reloaded"}
    assert agg.tracker.is_pending(0, long_window, "rolled", "t")  # its key stays, to be closed from the 1m rows


def test_the_aggregator_sweeps_on_its_tick():
    now = [0.0]
    agg = aggregator(now)
    agg._close = lambda due: None  # noqa: SLF001 - no database here
    agg.partials.add("gone", "t", round(T0 * US), 1.0, 0.0)
    agg.close_due()  # starts the sweep clock
    now[0] = IDLE + 200.0
    agg.close_due()
    assert agg.partials.acc == {}


def test_rules_are_shared_per_metric_and_cached_per_series_only_for_sensors_with_their_own_entry():
    cfg = parse({"limits": {"state_idle_s": IDLE}, "thresholds": {"temperature": {"warning": {"max": 40}}},
                 "detection": {"offline_after_s": 0,
                               "sensors": {"special": {"metrics": {"temperature": {"threshold": {"warning": {"max": 30}}}}}}}},
                {})
    ev = AlertEvaluator(alert_sections(cfg).evaluator)
    ev.evaluate([reading(f"s{i}", 20.0, T0) for i in range(100)] + [reading("special", 20.0, T0)], now=0.0)
    assert set(ev.rules._by_metric) == {"temperature"} and set(ev.rules._cache) == {("special", "temperature")}
    ev.evict_idle(now=IDLE + 1)
    assert ev.rules._cache == {}
    out = ev.evaluate([reading("special", 35.0, T0 + 2000), reading("s1", 35.0, T0 + 2000)], now=IDLE + 2)
    assert [t.alert.sensor_id for t in out] == ["special"]  # its own bound (30) again, merged afresh


def test_a_ttl_is_set_again_once_a_tenth_of_it_passed_and_only_after_a_successful_write():
    from pipeline.runtime.idle import TtlRefresh

    ttl = TtlRefresh(1000.0)
    assert ttl.ttl == 1100 and ttl.due(["a", "b"], 0.0) == ["a", "b"]
    assert ttl.due(["a"], 1.0) == ["a"]  # the first write failed: not noted, asked again
    ttl.done(["a", "b"], 1.0)
    assert ttl.due(["a", "b"], 50.0) == []
    ttl.done([], 50.0)
    assert ttl.due(["a", "b"], 101.0) == ["a", "b"]
    ttl.done(["a"], 101.0)
    ttl.done([], 1200.0)  # b's TTL ran out: no longer noted (a new write sets it like a new sensor's)
    assert set(ttl._set) == {"a"}


def test_a_threshold_only_series_keeps_a_clock_alone_until_a_reload_gives_it_a_detector_with_history():
    ev = AlertEvaluator(alert_sections(CFG).evaluator)
    ev.evaluate([reading("h", 20.0, T0 + i, "humidity") for i in range(3)], now=5.0)
    assert ev.series[("h", "humidity")] == 5.0  # humidity has a threshold only: no history array
    stuck = parse({"limits": {"state_idle_s": IDLE}, "thresholds": {"humidity": {"warning": {"max": 40}}},
                   "detection": {"offline_after_s": 0, "metrics": {"humidity": {"stuck": {"count": 3}}}}}, {})
    ev.reconfigure(alert_sections(stuck).evaluator)
    out = ev.evaluate([reading("h", 20.0, T0 + 10 + i, "humidity") for i in range(3)], now=6.0)
    assert [(t.event, t.alert.type) for t in out] == [("opened", "stuck")]  # the run counts from the reload
    assert ev.series[("h", "humidity")][RUN_N] == 3


def test_a_large_release_rebuilds_the_pending_keys_in_new_containers_in_the_same_order(monkeypatch):
    monkeypatch.setattr(memory, "released", lambda count, owner: None)  # no trim timer left for other tests
    now = [0.0]
    agg = aggregator(now)
    ts = round(T0 * US)
    five = 300 * US
    long_window = Window("5m", ts - ts % five, ts - ts % five + five)
    sensors = [f"s{i}" for i in range(RELEASED_FROM)]
    for sensor in sensors:
        agg.partials.add(sensor, "t", ts, 1.0, 0.0)
        agg.tracker.add(0, long_window, sensor, "t")  # rolled up: held as keys only once idle
    agg.partials.add("live", "t", ts, 1.0, 900.0)
    agg.tracker.add(0, long_window, "live", "t")
    old = agg.tracker.pending[(0, long_window)]
    before = list(old)
    assert agg.evict_idle(now=IDLE + 1) == RELEASED_FROM
    new = agg.tracker.pending[(0, long_window)]
    assert new is not old and new.by_sensor["s0"] is not old.by_sensor["s0"]  # made again: out of a flood's arenas
    assert list(new) == before and len(new) == len(before)  # the same keys, in the same order
    agg.tracker.observe(0, long_window.end + 3600 * US, now=IDLE + 2)  # the watermark passes the window
    [due] = agg.tracker.due(IDLE + 2)
    assert due.window == long_window and due.keys == frozenset(before)
