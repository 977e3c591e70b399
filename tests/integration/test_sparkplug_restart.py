"""kill -9 of the daemon between a DBIRTH and the DDATA after it: after the restart the data is stored under the
names its birth gave (the alias table was durable), nothing is invented and no rebirth is needed. The daemon runs
from the shipped fragment, `--config config.yaml --config deploy/formats/sparkplug.yaml`."""
from __future__ import annotations

import time

import pytest
import yaml

from pipeline.config import Settings
from pipeline.config.loading import parse
from pipeline.config.secret import Secrets
from tests.integration.clients import DaemonProcess, messages_in, wait_committed, wait_for
from tests.integration.sparkplug_edge import RECIPE, BOILER_BIRTH, EdgeNode, StateWatch, recipe_tree, temperature

pytestmark = pytest.mark.faults  # kill -9 and restart of the daemon: make test-faults


def test_kill_9_between_a_dbirth_and_its_ddata_loses_nothing_and_invents_nothing(env, tmp_path):
    host_id = f"host-{env.root}"
    # The shipped fragment as a user gives it (--config repeated), between the test's config and its own topics.
    mine = {"mqtt": {"topics": [f"spBv1.0/{env.root}/#"]}, "sparkplug": {"host_id": host_id}}
    base = env.write_config(tmp_path / "config.yaml", detection={"offline_after_s": 0})
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(mine))
    tree = recipe_tree(env, detection={"offline_after_s": 0}, **mine)
    kafka = env.migrate(Settings(config=parse(tree, {}), secrets=Secrets.from_env({}), path="test")).config.kafka
    g = env.root
    dev = f"{g}_Line-4_Boiler"
    daemon = DaemonProcess([base, RECIPE, tmp_path / "test.yaml"], tmp_path / "daemon.log")
    edge = EdgeNode(g, "Line-4", bd_seq=1)
    watch = StateWatch(host_id)
    try:
        daemon.start()
        wait_for(lambda: watch.states and watch.states[-1]["online"], what="STATE online")
        edge.send("NBIRTH", [])
        edge.send("DBIRTH", BOILER_BIRTH, device="Boiler")
        wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] == 2, what="the DBIRTH's values")
        wait_committed(kafka.consumer_group, kafka.topics.raw, 2)  # a restart will not read the births again
        assert env.query("SELECT device_id FROM sparkplug_births ORDER BY kafka_offset") == [("",), ("Boiler",)]
        daemon.kill()
        # The primary host's MQTT will: the broker says it is offline (retained), with its session's timestamp.
        wait_for(lambda: not watch.states[-1]["online"], what="STATE offline from the will")
        assert watch.states[-1]["timestamp"] == watch.states[0]["timestamp"]

        # While the daemon is away: data by alias only (the broker keeps them for the daemon's session).
        edge.send("DDATA", temperature(21.0), device="Boiler")
        edge.send("DDATA", [dict(alias=2, boolean_value=False)], device="Boiler")
        daemon.start()
        wait_for(lambda: env.query("SELECT count(*) FROM measurements")[0][0] == 4, timeout=30,
                 what=f"the DDATA after the restart\n{daemon.log_tail()}")
        rows = env.query("SELECT sensor_id, metric, value FROM measurements ORDER BY timestamp, metric")
        assert rows == [(dev, "inputs_temperature", 20.5), (dev, "outputs_pump", 1.0),
                        (dev, "inputs_temperature", 21.0), (dev, "outputs_pump", 0.0)]
        assert daemon.logged("event=sparkplug_births_loaded partitions=0,1,2,3 births=2")
        assert edge.rebirths() == 0, "the aliases were known: no rebirth request"
        time.sleep(1.0)  # a refusal among these readings would have been flushed with their batch by now
        assert messages_in(kafka.topics.dead_letter) == 0  # none refused
    finally:
        edge.close()
        daemon.stop()
        watch.close()
