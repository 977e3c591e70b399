"""Retained messages: the broker's stored copy of a topic's last retained message comes again with every
subscription (each start, each reconnect). It is acknowledged and counted, never stored again; a live message
is stored once, whether or not its publisher asked the broker to retain it."""
from __future__ import annotations

from tests.integration.clients import Publisher, RunningPipeline, wait_for


def stored(env, sensor: str) -> int:
    return env.query("SELECT count(*) FROM measurements WHERE sensor_id = %s", (sensor,))[0][0]


def test_retained_copies_are_not_stored_again_at_each_subscription_and_live_messages_are(env):
    settings = env.migrate(env.settings())
    root = env.root
    pub = Publisher()
    topics = [f"{root}/kept/temperature", f"{root}/live-0/temperature", f"{root}/live-1/temperature"]
    try:
        # Before the daemon ever subscribed: a device's last value, retained, with no timestamp of its own.
        pub.publish(topics[0], "20.5", retain=True).wait_for_publish(10)
        for start in range(2):  # two starts, two subscriptions: the broker sends its retained copies each time
            metrics = env.metrics()
            ignored = lambda: metrics.registry.get_sample_value("pipeline_mqtt_retained_ignored_total") or 0  # noqa: E731
            with RunningPipeline(settings, metrics):
                # Published while we are subscribed: a live message (the broker clears RETAIN on live delivery).
                pub.publish(topics[1 + start], "21.5", retain=True).wait_for_publish(10)
                wait_for(lambda: stored(env, f"live-{start}") == 1, 20, what=f"the live reading of start {start}")
                # Start 0 is sent `kept`; start 1 is sent `kept` and live-0, retained since start 0.
                wait_for(lambda: ignored() == 1 + start, 10, what="the retained copies counted")
        assert stored(env, "kept") == 0  # never a reading: it was published before, not to, this pipeline
        assert stored(env, "live-0") == 1 and stored(env, "live-1") == 1  # the retained copy did not store it again
    finally:
        for topic in topics:  # an empty retained message deletes the broker's copy (the broker is shared)
            pub.publish(topic, b"", retain=True).wait_for_publish(10)
        pub.close()
