"""The supervisor's named handles, failures and liveness, and the status the dashboard reads through it."""
import threading
from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from pipeline.observability.metrics import Metrics
from pipeline.observability.status import ConsumerStatus, LiveStatus, ReloadStatus, SinkStatus
from pipeline.runtime.deadline import Deadline
from pipeline.runtime.supervisor import Supervisor


def test_spawn_returns_a_named_handle_and_a_crash_is_reported_not_lost():
    metrics = Metrics(CollectorRegistry())
    sup = Supervisor(metrics.thread_alive)
    release = threading.Event()
    waiting = sup.spawn("waits", release.wait)
    crashing = sup.spawn("crashes", lambda: 1 / 0)
    assert waiting.name == "waits" and sup.names() == ["waits", "crashes"]
    assert sup.wait_failure(2.0)
    where, err = sup.first_failure()
    assert where == "crashes" and isinstance(err, ZeroDivisionError)
    crashing.join(2.0)
    assert sup.liveness() == {"waits": True, "crashes": False} and sup.dead() == ["crashes"] and not sup.healthy()
    get = metrics.registry.get_sample_value
    assert get("pipeline_thread_alive", {"thread": "waits"}) == 1
    assert get("pipeline_thread_alive", {"thread": "crashes"}) == 0
    release.set()
    sup.join([waiting, None], Deadline(2.0))
    assert not waiting.is_alive() and get("pipeline_thread_alive", {"thread": "waits"}) == 0


def test_join_waits_no_longer_than_the_deadline_less_the_reserve():
    sup = Supervisor()
    never = threading.Event()
    handle = sup.spawn("stuck", never.wait)
    deadline = Deadline(0.3)
    sup.join([handle], deadline, reserve=0.2)
    assert handle.is_alive() and deadline.left() > 0.05
    never.set()


def test_a_callback_error_reported_to_the_supervisor_makes_it_unhealthy():
    sup = Supervisor()
    assert sup.healthy()
    sup.report("mqtt.on_message", ValueError("bad"))
    assert not sup.healthy() and [(w, str(e)) for w, e in sup.failures()] == [("mqtt.on_message", "bad")]


class Sink:
    name = "postgres"
    last_success = 12.0

    def queue_depth(self):
        return 3

    def blocked(self):
        return 20.0, "refused: ReadOnlySqlTransaction (25006): cannot execute INSERT in a read-only transaction"


def test_live_status_asks_each_component_through_its_methods():
    sup = Supervisor()
    heard = []
    dead_letters = SimpleNamespace(subscribe=heard.append)
    holder = SimpleNamespace(last_reload_error="bad port", restart_required=["kafka.bootstrap_servers"])
    status = LiveStatus("i1", 5.0, sup, [Sink()], holder, "broker", 1883, dead_letters)
    assert status.consumer() == ConsumerStatus(False, False, "not started")
    assert not status.mqtt().connected and status.broker_drops() is None
    status.attach_source(SimpleNamespace(status=lambda: (True, "2 partition(s) assigned"), in_flight=lambda: 4,
                                         assigned=[0, 1], gaps=lambda: ()))
    status.attach_bridge(SimpleNamespace(is_connected=lambda: True))
    status.attach_broker_stats(SimpleNamespace(status=lambda: {"dropped": 0}))
    assert status.consumer() == ConsumerStatus(True, True, "2 partition(s) assigned", 4, 2)
    assert status.mqtt().connected and (status.mqtt().host, status.mqtt().port) == ("broker", 1883)
    assert status.broker_drops() == {"dropped": 0}
    assert status.sinks() == [SinkStatus("postgres", 3, 12.0, 20.0, "refused: ReadOnlySqlTransaction (25006): "
                                         "cannot execute INSERT in a read-only transaction")]
    assert status.config_reload() == ReloadStatus("bad port", ("kafka.bootstrap_servers",))
    status.on_dead_letters(print)
    assert heard == [print]
    sup.report("kafka-producer", RuntimeError("x"))
    assert status.failures() == [("kafka-producer", "x")] and status.threads() == {}
