"""redacted(): the whole config tree is walked, so every URL and every secret-named key is masked wherever it is."""
import json

import msgspec
import pytest

from pipeline import config as c
from pipeline.config.redact import mask_tree, mask_url, mask_urls

MARKER = "MARKER-5f3a"


@pytest.mark.parametrize("url, shown", [
    (f"https://user:{MARKER}@hooks.example.com/services/{MARKER}?token={MARKER}#{MARKER}", "https://***@hooks.example.com/***"),
    (f"https://hooks.example.com/{MARKER}", "https://hooks.example.com/***"),
    (f"http://hooks.example.com:8443?token={MARKER}", "http://hooks.example.com:8443/***"),
    (f"https://hooks.example.com#{MARKER}", "https://hooks.example.com/***"),
    ("https://hooks.example.com", "https://hooks.example.com"),
    (f"mqtts://agent:{MARKER}@[::1]:8883", "mqtts://***@[::1]:8883"),
    # Not a host[:port]: the whole authority could be a secret.
    (f"https://user:{MARKER}/x", "https://***"),
    # Notification schemes keep tokens in the host part: nothing is shown after the scheme.
    (f"tgram://{MARKER}/123456", "tgram://***"),
    (f"slack://{MARKER}/B/C", "slack://***"),
])
def test_mask_url_keeps_scheme_host_and_port_only(url, shown):
    assert mask_url(url) == shown
    assert MARKER not in mask_urls(f"see {url}, then")


def test_every_url_and_secret_key_anywhere_in_a_tree_is_masked():
    tree = {"a": {"b": [f"https://h.example/{MARKER}", {"deep": {"url": f"wss://x:{MARKER}@h:1/p"}}]},
            "channels": {"ops": f"mailto://me:{MARKER}@example.com", f"https://k.example/{MARKER}": 1},
            "kafka": {"client": {"sasl.oauthbearer.config": f"clientId=x clientSecret={MARKER}",
                                 "ssl.key.password": MARKER, "api_token": MARKER, "my_secret": 12345,
                                 "security.protocol": "SASL_SSL"}},
            "x": {"Password": [MARKER], "require_token_for_reads": False, "token": ""}}
    out = mask_tree(tree)
    assert MARKER not in json.dumps(out) and "12345" not in json.dumps(out)
    assert out["kafka"]["client"]["security.protocol"] == "SASL_SSL"  # not a secret: shown
    assert out["x"]["require_token_for_reads"] is False and out["x"]["token"] == ""  # says nothing secret
    assert out["a"]["b"][0] == "https://h.example/***"


def test_redacted_masks_webhook_url_and_kafka_client_secrets():
    tree = {"alerts": {"webhook": {"url": f"https://bot:{MARKER}@hooks.example.com/hook?token={MARKER}"}},
            "kafka": {"client": {"sasl.password": MARKER, "sasl.oauthbearer.config": f"secret={MARKER}",
                                 "ssl.key.password": MARKER, "ssl.keystore.password": MARKER,
                                 "sasl.oauthbearer.client.secret": MARKER, "ssl.ca.location": "/etc/ca.pem"}}}
    env = {name: MARKER for name in c.SECRET_ENV.values()} | {"KAFKA_SASL_PASSWORD": MARKER}
    settings = c.Settings(config=c.parse(tree, env), secrets=c.Secrets.from_env(env), path="x.yaml")
    assert settings.config.alerts.webhook.url.endswith(MARKER)  # the daemon itself still has the real value
    view = c.redacted(settings)
    assert MARKER not in json.dumps(view)
    assert view["config"]["alerts"]["webhook"]["url"] == "https://***@hooks.example.com/***"
    assert view["config"]["kafka"]["client"]["ssl.ca.location"] == "/etc/ca.pem"
    assert set(view["secrets"].values()) == {"***"}

