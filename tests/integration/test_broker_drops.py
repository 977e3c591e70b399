"""Loss at the broker made visible: a Mosquitto of the test's own with a tiny queue drops messages for an
offline persistent session, and the daemon's broker-stats client shows it as a metric, a status for the
dashboard and an alert that opens, then resolves once the drops stop."""
from __future__ import annotations

import socket
import subprocess
import time
import uuid
from datetime import datetime, timezone

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.integration.clients import Publisher, RunningPipeline, wait_for

DROPPED = "$SYS/broker/publish/messages/dropped"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mosquitto(tmp_path, port: int) -> subprocess.Popen:
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 10\nsys_interval 1\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("own mosquitto did not start") from None
            time.sleep(0.1)


def persistent_subscriber(port: int, client_id: str, topic: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.subscribe(topic, qos=1)[1]
    time.sleep(0.3)  # the SUBACK
    return c


def test_broker_drops_show_as_metric_status_and_an_alert_that_resolves(env, tmp_path):
    port = free_port()
    broker = start_mosquitto(tmp_path, port)
    try:
        extra = {"mqtt": {"host": "127.0.0.1", "port": port, "broker_stats": {"enabled": True, "report_interval_s": 1}},
                 "alerts": {"clear_readings": 3}}
        settings = env.migrate(env.settings(**extra))
        metrics = env.metrics()
        sample = lambda name: metrics.registry.get_sample_value(name, {"topic": DROPPED}) or 0  # noqa: E731
        with RunningPipeline(settings, metrics) as pipeline:
            stats = pipeline.broker_stats
            wait_for(lambda: stats.status()["last_value_at"] is not None, 15, what="the broker's first $SYS counter")
            baseline = sample("pipeline_mqtt_broker_messages_dropped")

            # A persistent QoS 1 session that goes away: the broker queues 10 messages for it and drops the rest.
            victim_id, topic = f"victim-{uuid.uuid4().hex[:8]}", f"v{env.run_id}/x"
            victim = persistent_subscriber(port, victim_id, topic)
            victim.disconnect()
            victim.loop_stop()
            pub = Publisher(port=port)
            pub.publish_all([(topic, f"{i}") for i in range(100)])
            pub.close()
            victim = persistent_subscriber(port, victim_id, topic)  # back: gets what was kept

            wait_for(lambda: sample("pipeline_mqtt_broker_drops_seen_total") >= 80, 15, what="drops seen in the metric")
            assert sample("pipeline_mqtt_broker_messages_dropped") >= baseline + 80
            status = stats.status()
            assert status["seen_since_start"] >= 80 and status["last_growth_at"] is not None
            assert status["sensor_id"] == "broker:127.0.0.1" and status["connected"]

            opened = wait_for(lambda: env.query(
                "SELECT type, severity, message FROM alerts WHERE sensor_id = %s AND metric = 'mqtt_dropped' "
                "AND NOT COALESCE(resolved, false)", ("broker:127.0.0.1",)), 20, what="the drop alert")
            assert opened[0][:2] == ("threshold", "warning")
            # The growth was stored as readings of the reserved sensor (history on the dashboard). The alert
            # and the row come from different sinks, each on its own flush interval: wait for the row.
            wait_for(lambda: (env.query("SELECT sum(value) FROM measurements WHERE sensor_id = 'broker:127.0.0.1' "
                                        "AND metric = 'mqtt_dropped'")[0][0] or 0) >= 80, 10, what="the stored drops")
            # No more drops: three reports without growth resolve it.
            wait_for(lambda: env.query("SELECT resolved FROM alerts WHERE sensor_id = 'broker:127.0.0.1'")
                     == [(True,)], 20, what="the drop alert resolving")
            victim.disconnect()
            victim.loop_stop()
    finally:
        broker.terminate()
        broker.wait(10)


def brokers_counter(port: int, wait: float = 1.0) -> int | None:
    """The drop counter as a newcomer receives it (None: not delivered, its retained copy expired)."""
    got = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"peek-{uuid.uuid4().hex[:8]}")
    c.on_message = lambda _c, _u, m: got.append(int(float(m.payload)))
    c.connect("127.0.0.1", port)
    c.subscribe(DROPPED)
    c.loop_start()
    time.sleep(wait)
    c.disconnect()
    c.loop_stop()
    return got[-1] if got else None


@pytest.mark.faults  # two daemon runs and a wait for the broker's counter to expire (about two minutes)
def test_a_restarted_daemon_counts_only_drops_no_earlier_run_counted(env, tmp_path):
    # The first run sees 300 drops and reports them; 200 more happen while the daemon is down. It comes back
    # when the broker no longer delivers its counter, so the 15-minute average (which holds all 500) is all it
    # has: only the 200 are new. Counting the whole average opened an alert for drops already reported.
    port = free_port()
    broker = start_mosquitto(tmp_path, port)
    victim_id, topic = f"victim-{uuid.uuid4().hex[:8]}", f"v{env.run_id}/x"
    try:
        extra = {"mqtt": {"host": "127.0.0.1", "port": port, "broker_stats": {"enabled": True, "report_interval_s": 1}}}
        settings = env.migrate(env.settings(**extra))
        victim = persistent_subscriber(port, victim_id, topic)  # a persistent session that goes away: queue of 10
        victim.disconnect()
        victim.loop_stop()

        def drop(n: int) -> None:
            pub = Publisher(port=port)
            pub.publish_all([(topic, f"{i}") for i in range(n)])
            pub.close()

        def seen(metrics) -> float:
            return sum(s.value for m in metrics.registry.collect() if m.name == "pipeline_mqtt_broker_drops_seen"
                       for s in m.samples if s.name.endswith("_total"))

        first = env.metrics()
        with RunningPipeline(settings, first) as pipeline:
            stats = pipeline.broker_stats
            wait_for(lambda: stats.status()["last_value_at"] is not None, 15, what="the broker's first $SYS value")
            before = brokers_counter(port) or 0
            drop(310)
            wait_for(lambda: seen(first) >= 300, 20, what="the first run counting 300 drops")
            # The average rose with them: a value of it published while this run watched.
            wait_for(lambda: (stats.status()["recent_rate_per_min"] or 0) * 15 >= 250, 20, what="the average")
            counted = seen(first)
        drop(200)  # the daemon is down: all dropped, the victim's queue is full
        # Every drop happened before publish_all returned: the first value past the first run's is the total.
        total = wait_for(lambda: (lambda v: v if v and v > before + counted else None)(brokers_counter(port)), 15,
                         what="the counter after the second drops")
        new = total - before - counted
        assert counted == 300 and new == 200, (before, counted, total)
        wait_for(lambda: brokers_counter(port) is None, 90, what="the counter's retained copy expiring")

        second = env.metrics()
        restarted = datetime.now(timezone.utc).replace(tzinfo=None)
        with RunningPipeline(settings, second) as pipeline:
            stats = pipeline.broker_stats
            wait_for(lambda: seen(second), 30, what="the second run estimating the new drops")
            time.sleep(4)  # two more updates of the average: nothing else may count
            estimated = seen(second)
            status = stats.status()
            print(f"second run: estimated {estimated} of {new} new drops; the average holds "
                  f"{status['recent_estimate']} (the first run's {counted} included)")
            assert status["counter_received"] is False and status["estimated"] is True
            assert status["recent_estimate"] >= counted  # the average still holds the first run's drops
            assert 0.8 * new <= estimated <= 1.05 * new, (estimated, new)
            # What the second run reported, as readings of the broker's sensor: the new drops, not the first run's.
            reported = lambda: env.query("SELECT COALESCE(sum(value), 0) FROM measurements WHERE sensor_id = "  # noqa: E731
                                         "'broker:127.0.0.1' AND metric = 'mqtt_dropped' AND timestamp >= %s",
                                         (restarted,))[0][0]
            wait_for(lambda: reported() == estimated, 10, what="the second run's report stored")
    finally:
        broker.terminate()
        broker.wait(10)


@pytest.mark.faults  # a daemon killed with kill -9 while PostgreSQL refuses writes, then started again
def test_drops_seen_but_not_stored_before_a_kill_are_counted_again_at_the_next_start(env, tmp_path):
    # PostgreSQL refuses writes, so the drop reading cannot be stored (the PostgreSQL and alert sinks hold it);
    # the daemon is killed; PostgreSQL is writable again and the daemon starts within the counter's minute. When
    # the counter was kept as the baseline on receipt, the restarted daemon saw no growth and the drops never
    # became a row nor an alert.
    from tests.integration.clients import DaemonProcess
    from tests.integration.test_store_refusals import set_read_only

    port = free_port()
    broker = start_mosquitto(tmp_path, port)
    db = f"test_{env.run_id}"
    victim_id, topic = f"victim-{uuid.uuid4().hex[:8]}", f"v{env.run_id}/x"
    extra = {"mqtt": {"host": "127.0.0.1", "port": port, "broker_stats": {"enabled": True, "report_interval_s": 1}}}
    env.migrate(env.settings(**extra))
    daemon = DaemonProcess(env.write_config(tmp_path / "config.yaml", **extra), tmp_path / "daemon.log")
    try:
        daemon.start()
        victim = persistent_subscriber(port, victim_id, topic)  # a persistent session that goes away: queue of 10
        victim.disconnect()
        victim.loop_stop()
        set_read_only(db, True)
        try:
            pub = Publisher(port=port)
            pub.publish_all([(topic, f"{i}") for i in range(100)])
            pub.close()
            wait_for(lambda: daemon.logged("event=mqtt_broker_dropped"), 20, what="the drops seen")
            wait_for(lambda: daemon.logged("event=sink_blocked sink=postgres"), 20, what="the drop reading held up")
            time.sleep(2)  # reports of the interval after: nothing new, still not stored
            daemon.kill()
        finally:
            set_read_only(db, False)
        rows = lambda: env.query("SELECT COALESCE(sum(value), 0) FROM measurements "  # noqa: E731
                                 "WHERE sensor_id = 'broker:127.0.0.1' AND metric = 'mqtt_dropped'")[0][0]
        assert rows() == 0
        daemon.start()
        stored = wait_for(lambda: rows() >= 80 and rows(), 30, what="the drops counted again and stored")
        opened = wait_for(lambda: env.query("SELECT severity FROM alerts WHERE sensor_id = 'broker:127.0.0.1' "
                                            "AND metric = 'mqtt_dropped'"), 20, what="the drop alert")
        assert opened == [("warning",)] and stored <= 90 + 1, stored
    except BaseException:
        print(daemon.log_tail(80))
        raise
    finally:
        daemon.stop()
        broker.terminate()
        broker.wait(10)
