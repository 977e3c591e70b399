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
