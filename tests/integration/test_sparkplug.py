"""Sparkplug B through the real daemon and Mosquitto, configured by the shipped recipe (deploy/formats/sparkplug.yaml):
birth -> data by alias -> death (offline at once) -> rebirth; a seq gap answered by an NCMD rebirth request seen
on the broker; hostile payloads dead-lettered while another node's readings are stored."""
from __future__ import annotations

from pipeline.config import Settings
from pipeline.config.loading import parse
from pipeline.config.secret import Secrets
from pipeline.operators.sparkplug.proto import DataType
from tests.integration.clients import RunningPipeline, read_topic, wait_for
from tests.integration.sparkplug_edge import BOILER_BIRTH, EdgeNode, StateWatch, recipe_tree, temperature


def settings_of(env, **extra) -> Settings:
    tree = recipe_tree(env, detection={"offline_after_s": 3600}, processing={"interval_s": 0.5}, **extra)
    return env.migrate(Settings(config=parse(tree, {}), secrets=Secrets.from_env({}), path="test"))


def measurements(env) -> list[tuple]:
    return env.query("SELECT sensor_id, metric, value FROM measurements ORDER BY timestamp, sensor_id, metric")


def test_birth_data_death_rebirth_and_a_seq_gap_asks_for_a_rebirth(env):
    settings = settings_of(env)
    g = env.root
    node, dev = f"{g}_Line-4", f"{g}_Line-4_Boiler"
    with RunningPipeline(settings, env.metrics()) as p:
        edge = EdgeNode(g, "Line-4", bd_seq=1)
        try:
            edge.send("NBIRTH", [dict(name="Uptime", alias=10, datatype=DataType.Int64, long_value=42)])
            edge.send("DBIRTH", BOILER_BIRTH, device="Boiler")
            edge.send("DDATA", temperature(21.0), device="Boiler")
            wait_for(lambda: len(measurements(env)) == 4, what="birth values and the data by alias")
            assert sorted(measurements(env)) == [(node, "uptime", 42.0), (dev, "inputs_temperature", 20.5),
                                                 (dev, "inputs_temperature", 21.0), (dev, "outputs_pump", 1.0)]
            assert edge.rebirths() == 0
            # seq jumps from 2 to 7: the host asks for a rebirth (NCMD on the broker); the data is still stored.
            edge.send("DDATA", temperature(22.0), device="Boiler", seq=7)
            wait_for(lambda: edge.rebirths() == 1, what="an NCMD Node Control/Rebirth")
            wait_for(lambda: len(measurements(env)) == 5, what="the reading after the gap")
            # NDEATH with the NBIRTH's bdSeq: node and device offline at once (offline_after_s is an hour).
            edge.raw("NDEATH", edge.death())
            wait_for(lambda: env.query("SELECT count(*) FROM alerts WHERE type = 'offline' AND NOT resolved")[0][0] == 2,
                     what="two offline alerts")
            assert sorted(r[0] for r in env.query("SELECT sensor_id FROM alerts WHERE type = 'offline'")) == [node, dev]
            # Rebirth: new bdSeq, births again, data: the alerts resolve, the data resolves by the new aliases.
            edge.bd_seq = 2
            edge.send("NBIRTH", [dict(name="Uptime", alias=10, datatype=DataType.Int64, long_value=43)])
            edge.send("DBIRTH", [dict(name="Inputs/Temperature", alias=5, datatype=DataType.Float, float_value=23.0)],
                      device="Boiler")
            edge.send("DDATA", temperature(24.0, alias=5), device="Boiler")
            wait_for(lambda: env.query("SELECT count(*) FROM alerts WHERE type = 'offline' AND resolved")[0][0] == 2,
                     what="the offline alerts resolved by the rebirth")
            wait_for(lambda: len(measurements(env)) == 8, what=f"the rebirth's readings {measurements(env)}")
            assert measurements(env)[-3:] == [(node, "uptime", 43.0), (dev, "inputs_temperature", 23.0),
                                              (dev, "inputs_temperature", 24.0)]
            births = env.query("SELECT device_id, bd_seq, metrics IS NULL FROM sparkplug_births ORDER BY kafka_offset")
            assert births == [("", 1, False), ("Boiler", 1, False), ("", 1, True), ("", 2, False), ("Boiler", 2, False)]
            m = p.metrics.registry
            assert m.get_sample_value("pipeline_sparkplug_metrics_skipped_total", {"reason": "string"}) == 1
            assert m.get_sample_value("pipeline_sparkplug_rebirth_requests_total",
                                      {"cause": "seq_gap", "outcome": "sent"}) == 1
        finally:
            edge.close()


def test_data_before_birth_is_dead_lettered_and_hostile_payloads_refused_while_another_node_flows(env):
    settings = settings_of(env, sparkplug={"rebirth_requests": False})
    g = env.root
    with RunningPipeline(settings, env.metrics()) as p:
        bad, good = EdgeNode(g, "Bad"), EdgeNode(g, "Good")
        try:
            good.send("NBIRTH", [dict(name="Flow", alias=1, datatype=DataType.Double, double_value=1.5)])
            bad.raw("NBIRTH", b"\x0a\x05\x08\x01")  # truncated
            bad.raw("NDATA", b"\x12\xff\xff\xff\xff\x0f" + b"\x00" * 64)  # a 4 GB length declared
            bad.raw("NDATA", b"\x12\x83\x01" * 3000)  # nested past protobuf's limit / truncated
            bad.send("NDATA", [dict(alias=1, datatype=DataType.Double, double_value=9.0)])  # well-formed, no birth
            good.send("NDATA", [dict(alias=1, datatype=DataType.Double, double_value=2.5)])
            wait_for(lambda: len(measurements(env)) == 2, what="the good node's readings")
            dead = read_topic(settings.config.kafka.topics.dead_letter, expected=4)
            reasons = sorted(dict(m.headers())["reason"].decode() for m in dead)
            assert reasons == ["sparkplug_before_birth"] + ["sparkplug_invalid_payload"] * 3
            assert measurements(env) == [(f"{g}_Good", "flow", 1.5), (f"{g}_Good", "flow", 2.5)]
            # Keyed by the edge node (the topic's fourth level): one node's messages in one partition, in order.
            raw = read_topic(settings.config.kafka.topics.raw, expected=6)
            partitions: dict = {}
            for m in raw:
                partitions.setdefault(m.key(), set()).add(m.partition())
            assert {k: len(v) for k, v in partitions.items()} == {b"Bad": 1, b"Good": 1}
            assert bad.rebirths() == 0  # rebirth_requests: false, a read-only deployment
            assert p.metrics.registry.get_sample_value("pipeline_sparkplug_rebirth_requests_total",
                                                       {"cause": "before_birth", "outcome": "disabled"}) == 1
        finally:
            bad.close()
            good.close()


def test_primary_host_state_online_at_start_and_offline_at_a_clean_stop(env):
    host_id = f"host-{env.root}"
    settings = settings_of(env, sparkplug={"host_id": host_id})
    watch = StateWatch(host_id)
    try:
        with RunningPipeline(settings, env.metrics()):
            wait_for(lambda: watch.states and watch.states[-1]["online"], what="STATE online")
        wait_for(lambda: not watch.states[-1]["online"], what="STATE offline after the stop")
        online, offline = watch.states[0], watch.states[-1]
        assert online["timestamp"] == offline["timestamp"] > 0  # one session's birth and death share it
    finally:
        watch.close()


def test_the_births_store_keeps_the_last_births_per_device_and_reads_back_a_partitions_births(env):
    import psycopg

    from pipeline.operators.sparkplug.host import Birth
    from pipeline.operators.sparkplug.store import BirthStore

    env.migrate()
    store = BirthStore(lambda: psycopg.connect(host="127.0.0.1", user="postgres", dbname=f"test_{env.run_id}",
                                               autocommit=True), kept=2)
    births = [Birth("G", "E", "D", 1, offset, 7, {1: ("Inputs/Temperature", 9)}, {"Inputs/Temperature": 9})
              for offset in (10, 20, 30, 40)]
    store.save(births[:3])
    store.save(births[3:] + [Birth("G", "E", "", 1, 5, 7, None, None), Birth("G", "F", "", 2, 6, 1, {}, {})])
    store.save(births[3:])  # read again after a restart: stored once
    assert env.query("SELECT device_id, kafka_offset FROM sparkplug_births ORDER BY edge_node_id, device_id, "
                     "kafka_offset") == [("", 5), ("D", 30), ("D", 40), ("", 6)]
    loaded = sorted(store.load({1}), key=lambda b: b.offset)
    assert loaded == [Birth("G", "E", "", 1, 5, 7, None, None), births[2], births[3]]
    store.close()
