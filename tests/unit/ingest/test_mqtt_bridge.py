"""The MQTT bridge's subscription: shared-subscription filters and per-instance client ids."""
import pytest

from pipeline import config as c
from pipeline.ingest.mqtt_bridge import client_id_suffix, subscription_filters


def test_shared_subscription_filters_and_distinct_client_ids():
    single = c.parse({"mqtt": {"topics": ["sensors/#"]}}, {})
    assert subscription_filters(single.mqtt) == ["sensors/#"] and client_id_suffix(single.mqtt, "a") == ""
    shared = c.parse({"mqtt": {"topics": ["sensors/#", "system/#"], "shared_group": "pipe"}},
                     {"PIPELINE__INSTANCE_ID": "node-2"})
    assert subscription_filters(shared.mqtt) == ["$share/pipe/sensors/#", "$share/pipe/system/#"]
    assert client_id_suffix(shared.mqtt, shared.instance_id) == "-node-2"
    with pytest.raises(c.ConfigError, match=r"^mqtt.shared_group"):
        c.parse({"mqtt": {"shared_group": "a/b"}}, {})


def test_mqtt5_is_the_default_with_a_receive_window_of_its_own():
    cfg = c.parse({}, {}).mqtt
    assert cfg.protocol == "5" and cfg.receive_maximum == 5000


def test_connect_properties_keep_the_sessions_semantics_of_3_1_1():
    from pipeline.ingest.mqtt_bridge import connect_properties

    persistent = connect_properties(c.parse({"mqtt": {"session_expiry_s": 600, "receive_maximum": 7000}}, {}).mqtt)
    assert (persistent.SessionExpiryInterval, persistent.ReceiveMaximum) == (600, 7000)
    # The fast path refuses a large message itself (a dead letter); the broker is told the limit only on the plain path.
    assert not hasattr(persistent, "MaximumPacketSize")
    plain = connect_properties(c.parse({"mqtt": {"fast_path": False}}, {}).mqtt)
    assert plain.MaximumPacketSize == 262144
    clean = connect_properties(c.parse({"mqtt": {"clean_session": True}}, {}).mqtt)
    assert clean.SessionExpiryInterval == 0  # 3.1.1's clean session: gone at disconnect


def test_only_a_refused_protocol_version_means_falling_back_to_3_1_1():
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    from pipeline.ingest.mqtt_bridge import refused_version

    # What paho hands on_connect for a 3.1.1 broker's CONNACK code 1, and a version 5 broker's 0x84.
    assert refused_version("5", ReasonCode(PacketTypes.CONNACK, aName="Unsupported protocol version").value)
    assert refused_version("5", 0x84) and refused_version("5", 0x01)
    assert not refused_version("3.1.1", 0x84)  # nothing older to fall back to
    for other in ("Not authorized", "Bad user name or password", "Server unavailable"):
        assert not refused_version("5", ReasonCode(PacketTypes.CONNACK, aName=other).value)


def test_relearning_covers_every_message_the_broker_may_resend():
    from pipeline.ingest.mqtt_bridge import RELEARN_PER_PARTITION, relearn_count

    assert relearn_count(c.parse({}, {}).mqtt) == RELEARN_PER_PARTITION
    assert relearn_count(c.parse({"mqtt": {"receive_maximum": 20000}}, {}).mqtt) == 20000
    assert relearn_count(c.parse({"mqtt": {"protocol": "3.1.1", "receive_maximum": 20000}}, {}).mqtt) == RELEARN_PER_PARTITION
