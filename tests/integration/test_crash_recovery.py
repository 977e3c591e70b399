"""kill -9 the daemon mid-window, restart it: the window's row is complete and no alert is duplicated.
Then SIGHUP with an edited config.yaml: the new threshold applies to the running daemon."""
from __future__ import annotations

import json
import signal
import time
from datetime import datetime, timezone

import pytest
import yaml

from tests.integration.clients import DaemonProcess, Publisher, wait_committed, wait_for

pytestmark = pytest.mark.faults  # kill -9 and restart of the daemon: make test-faults


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc).replace(tzinfo=None)


def test_kill_9_mid_window_loses_no_reading_and_duplicates_no_alert_then_sighup_reloads(env, tmp_path):
    extra = dict(aggregation={"periods": ["10s"], "grace_s": 2, "max_lateness_s": 60, "idle_close_s": 600},
                 thresholds={"boiler_temp": {"warning": {"max": 40}, "critical": {"max": 60}, "deadband": 0.5}},
                 detection={"offline_after_s": 0}, alerts={"clear_readings": 3}, processing={"interval_s": 0.5},
                 reload={"watch_interval_s": 0})  # only SIGHUP reloads, so the test shows SIGHUP does
    config = env.write_config(tmp_path / "config.yaml", **extra)
    kafka = env.migrate(env.settings(**extra)).config.kafka
    log = tmp_path / "daemon.log"
    root = env.root
    t0 = (int(time.time()) // 10) * 10 - 60
    first = [10, 11, 12, 13, 45]  # t0 .. t0+4; 45 opens a warning alert
    # t0+5 .. t0+9: 46 and 47 are above the bound again (the open alert must not double); never 3 clear in a row
    second = [46, 15, 16, 47, 17]

    def publish(values, start, sensor="s1"):
        pub.publish_all([(f"{root}/{sensor}", json.dumps({"metric": "boiler_temp", "value": v, "timestamp": start + i}))
                         for i, v in enumerate(values)])

    pub = Publisher()
    daemon = DaemonProcess(config, log)
    try:
        daemon.start()
        publish(first, t0)
        publish([5, 7], t0 + 1, sensor="s2")  # s2's window gets no reading at all after the restart
        wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] == 7, what="the first half stored")
        wait_for(lambda: env.query("SELECT count(*) FROM alerts")[0][0] == 1, what="the alert stored")
        # Every sink holds the 7 messages once the group's committed offsets cover them: after the restart
        # Kafka will not redeliver them, so the open window must come back from what was stored.
        wait_committed(kafka.consumer_group, kafka.topics.raw, 7)
        assert env.query("SELECT count(*) FROM aggregations")[0][0] == 0  # the window is still open
        daemon.kill()

        daemon.start()
        publish(second, t0 + 5)
        publish([20], t0 + 15)  # watermark t0+13: past the window's end (t0+10) plus grace
        publish([9], t0 + 15, sensor="s2")  # the same for s2's partition, in s2's next window
        wait_for(lambda: env.query("SELECT count(*) FROM aggregations")[0][0] == 2, timeout=30, what="the window rows")
        values = first + second
        assert env.query("SELECT sensor_id, metric, period, timestamp, avg_value, min_value, max_value, count "
                         "FROM aggregations ORDER BY sensor_id") == [
            ("s1", "boiler_temp", "10s", utc(t0), sum(values) / 10, 10.0, 47.0, 10),
            ("s2", "boiler_temp", "10s", utc(t0), 6.0, 5.0, 7.0, 2)]
        alerts = env.query("SELECT sensor_id, metric, type, severity, resolved FROM alerts")
        assert alerts == [("s1", "boiler_temp", "threshold", "warning", False)]

        # Live reload by SIGHUP: critical max 30 makes the next reading escalate the open alert in place.
        tree = yaml.safe_load(config.read_text())
        tree["thresholds"]["boiler_temp"]["critical"]["max"] = 30
        tree["postgres"]["pool_max"] = 6
        config.write_text(yaml.safe_dump(tree))
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: daemon.logged("event=config_reloaded trigger=sighup"), what="the SIGHUP reload")
        assert daemon.logged("event=config_needs_restart keys=postgres.pool_max")
        publish([35], t0 + 16)
        wait_for(lambda: env.query("SELECT severity FROM alerts")[0][0] == "critical", what="the escalation")
        assert env.query("SELECT count(*) FROM alerts")[0][0] == 1
        assert daemon.stop() == 0
    except BaseException:
        print(daemon.log_tail(80))
        raise
    finally:
        pub.close()
        daemon.stop()
