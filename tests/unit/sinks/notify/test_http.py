"""The hardened POST against a local server: no redirects followed, one overall deadline, HMAC signature."""
import hashlib
import hmac
import time

import pytest

from pipeline.sinks.notify.http import DeliveryError, post, sign, verify
from tests.unit.sinks.notify.receiver import Receiver, receivers  # noqa: F401 - receivers: a fixture


def test_a_redirect_is_a_failure_and_never_followed(receivers):
    elsewhere = receivers()
    hook = receivers(("redirect", elsewhere.url))
    with pytest.raises(DeliveryError) as err:
        post(hook.url, b'{"a": 1}', {}, deadline_s=5)
    assert "302" in str(err.value) and not err.value.transient
    assert [m for m, _, _ in hook.requests] == ["POST"] and elsewhere.requests == []


def test_a_slow_drip_answer_is_cut_at_the_deadline(receivers):
    hook = receivers("drip", drip_interval_s=0.2)  # the answer would take about 8 s
    started = time.monotonic()
    with pytest.raises(DeliveryError) as err:
        post(hook.url, b"{}", {}, deadline_s=1.0)
    took = time.monotonic() - started
    assert "deadline" in str(err.value) and err.value.transient
    assert took < 2.5, took  # the deadline (1 s) plus scheduling slack, not the 8 s the server wanted


def test_status_classes(receivers):
    hook = receivers(503, 429, 400, 204)
    for transient in (True, True, False):
        with pytest.raises(DeliveryError) as err:
            post(hook.url, b"{}", {}, deadline_s=5)
        assert err.value.transient is transient and hook.url not in str(err.value)
    assert post(hook.url, b"{}", {}, deadline_s=5) == 204


def test_unreachable_is_transient_and_names_no_url():
    with pytest.raises(DeliveryError) as err:
        post("http://127.0.0.1:9/secret-token-path", b"{}", {}, deadline_s=2)
    assert err.value.transient and "secret-token-path" not in str(err.value)


def test_signature_is_hmac_sha256_over_timestamp_dot_body_and_verifies():
    key, body, ts = b"k3y", b'{"event": "opened"}', 1_760_000_000
    expected = hmac.new(key, b"1760000000." + body, hashlib.sha256).hexdigest()
    assert sign(key, ts, body) == f"sha256={expected}"
    assert verify(key, str(ts), f"sha256={expected}", body, now=ts + 10)
    assert not verify(key, str(ts), f"sha256={expected}", body + b" ", now=ts + 10)  # another body
    assert not verify(b"other", str(ts), f"sha256={expected}", body, now=ts + 10)  # another key
    assert not verify(key, str(ts), f"sha256={expected}", body, now=ts + 301)  # a replay, too late
    assert not verify(key, "garbage", f"sha256={expected}", body, now=ts)
