"""The notifier runner against local receivers: signed exact payloads, retries, dead letters for a failing
channel, one digest for a storm, silencing counted by reason, a full queue dropping without blocking."""
import json
import time

import pytest
from prometheus_client import CollectorRegistry

from pipeline.config import ConfigError, Secret, parse
from pipeline.observability.metrics import Metrics
from pipeline.sinks.notify import build_notifier
from pipeline.sinks.notify.http import verify
from tests.unit.sinks.notify.receiver import Receiver

FAST = {"initial_interval_s": 0.01, "max_interval_s": 0.05, "jitter": 0.0}
KEY = "s3cret-key"


def alert(i=1, event="opened", severity="critical", sensor=None):
    return {"event": event, "alert_id": i, "sensor_id": sensor or f"s{i}", "metric": "boiler_temp", "type": "threshold",
            "severity": severity, "message": f"boiler_temp of s{i} is 61", "timestamp": 1_760_000_000.0, "value": 61.0}


class FakeDeadLetters:
    def __init__(self):
        self.letters = []

    def send(self, records, timeout=30.0):
        self.letters.extend(records)


@pytest.fixture
def receivers():
    made = []

    def make(*answers):
        r = Receiver(answers)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def make(channels, env, silenced=None, dead=None, **notifications):
    tree = {"retry": FAST, "alerts": {"notifications": {"channels": channels, "max_elapsed_s": 0.3, **notifications}}}
    cfg = parse(tree)
    metrics = Metrics(CollectorRegistry())
    n = build_notifier(cfg.alerts, env, Secret(KEY), cfg.retry, metrics, dead_letters=dead,
                       **({"silenced": silenced} if silenced else {}))
    n.start()
    return n, metrics.registry.get_sample_value


def wait(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.02)
    return pred()


def test_json_webhook_gets_the_exact_payload_signed_and_retried(receivers):
    hook = receivers(503)
    n, get = make([{"name": "hook", "url_env": "HOOK_URL"}], {"HOOK_URL": hook.url})
    n.offer(alert(1))
    assert wait(lambda: get("pipeline_alert_notifications_sent_total", {"channel": "hook"}) == 1)
    n.stop(1)
    (_, first, _), (_, body, headers) = hook.requests
    assert body == first and json.loads(body) == alert(1)
    assert verify(KEY.encode(), headers["X-Pipeline-Timestamp"], headers["X-Pipeline-Signature"], body, time.time())
    assert get("pipeline_retries_total", {"operation": "alert_webhook"}) == 1


def test_a_failing_channel_is_dead_lettered_by_name_and_others_still_deliver(receivers):
    good = receivers()
    dead = FakeDeadLetters()
    n, get = make([{"name": "good", "url_env": "GOOD"}, {"name": "broken", "url_env": "BROKEN"}],
                  {"GOOD": good.url, "BROKEN": "http://127.0.0.1:9/token-abc"}, dead=dead)
    n.offer(alert(7))
    assert wait(lambda: get("pipeline_alert_notifications_failed_total", {"channel": "broken"}) == 1)
    n.stop(1)
    assert good.bodies == [alert(7)]
    [letter] = dead.letters
    headers = {k: v.decode() for k, v in letter.headers()}
    assert (headers["kind"], headers["reason"], headers["stage"]) == ("retry_exhausted", "notification_failed", "alert_notifier")
    assert headers["error"].startswith("channel=broken: ") and int(headers["attempts"]) > 1
    assert json.loads(letter.source.payload) == {"channel": "broken", "digest": False, "alerts": [alert(7)]}
    assert "token-abc" not in repr(letter.headers()) + letter.source.payload.decode()
    assert get("pipeline_alert_notifications_sent_total", {"channel": "good"}) == 1


def test_a_redirect_is_refused_at_once_and_dead_lettered(receivers):
    elsewhere = receivers()
    hook = receivers(("redirect", elsewhere.url))
    dead = FakeDeadLetters()
    n, get = make([{"name": "hook", "url_env": "HOOK"}], {"HOOK": hook.url}, dead=dead)
    n.offer(alert(1))
    assert wait(lambda: len(dead.letters) == 1)
    n.stop(1)
    assert len(hook.requests) == 1 and elsewhere.requests == []
    assert "redirect not followed" in dict(dead.letters[0].headers())["error"].decode()


def test_a_storm_of_50_alerts_is_5_messages_and_one_digest(receivers):
    hook = receivers()
    n, get = make([{"name": "hook", "url_env": "HOOK"}], {"HOOK": hook.url}, digest={"window_s": 0.5, "max_alerts": 5})
    for i in range(50):
        n.offer(alert(i))
    assert wait(lambda: get("pipeline_alert_notification_digests_total", {"channel": "hook"}) == 1)
    assert wait(lambda: len(hook.bodies) == 6)
    time.sleep(0.7)  # another window: nothing more comes
    n.stop(1)
    bodies = hook.bodies
    assert len(bodies) == 6 and [b["alert_id"] for b in bodies[:5]] == [0, 1, 2, 3, 4]
    digest = bodies[5]
    assert digest["event"] == "digest" and digest["count"] == 45 and [a["alert_id"] for a in digest["alerts"]] == list(range(5, 50))
    assert get("pipeline_alert_notifications_sent_total", {"channel": "hook"}) == 6


def test_a_digest_of_a_big_storm_lists_max_listed_alerts_and_says_how_many_more(receivers):
    hook = receivers()
    n, get = make([{"name": "hook", "url_env": "HOOK"}], {"HOOK": hook.url},
                  digest={"window_s": 0.5, "max_alerts": 1, "max_listed": 4})
    for i in range(30):
        n.offer(alert(i))
    assert wait(lambda: len(hook.bodies) == 2)
    n.stop(1)
    digest = hook.bodies[1]
    assert digest["event"] == "digest" and digest["count"] == 29 and digest["more"] == 25
    assert [a["alert_id"] for a in digest["alerts"]] == [1, 2, 3, 4]


def test_silenced_alerts_are_counted_by_reason_and_not_sent(receivers):
    hook = receivers()
    snoozed = {2, 3}
    n, get = make([{"name": "hook", "url_env": "HOOK"}], {"HOOK": hook.url},
                  silenced=lambda p, now: "snoozed" if p["alert_id"] in snoozed else None, renotify_s=0)
    for i in (1, 2, 3, 4):
        n.offer(alert(i))
    assert wait(lambda: len(hook.bodies) == 2)
    n.stop(1)
    assert [b["alert_id"] for b in hook.bodies] == [1, 4]
    assert get("pipeline_alert_notifications_suppressed_total", {"reason": "snoozed"}) == 2


def test_renotify_suppression_is_counted(receivers):
    hook = receivers()
    n, get = make([{"name": "hook", "url_env": "HOOK"}], {"HOOK": hook.url}, renotify_s=3600)
    n.offer(alert(1, sensor="s1"))
    n.offer(alert(1, event="resolved", sensor="s1"))
    n.offer(alert(2, sensor="s1"))  # the same sensor/metric/type reopened at once
    assert wait(lambda: len(hook.bodies) == 2)
    n.stop(1)
    assert [(b["alert_id"], b["event"]) for b in hook.bodies] == [(1, "opened"), (1, "resolved")]
    assert get("pipeline_alert_notifications_suppressed_total", {"reason": "renotify"}) == 1


def test_a_full_queue_drops_and_counts_without_blocking():
    cfg = parse({"alerts": {"notifications": {"channels": [{"name": "hook", "url_env": "HOOK"}], "queue_max": 2,
                                              "renotify_s": 0, "digest": {"max_alerts": 100}}}})
    metrics = Metrics(CollectorRegistry())
    n = build_notifier(cfg.alerts, {"HOOK": "http://127.0.0.1:9/"}, Secret(""), cfg.retry, metrics)
    started = time.monotonic()
    for i in range(5):  # not started: nothing drains the queue
        n.offer(alert(i))
    assert time.monotonic() - started < 0.5
    assert metrics.registry.get_sample_value("pipeline_alert_webhook_deliveries_total", {"result": "dropped"}) == 3


def test_config_errors_name_the_key_never_the_url():
    cfg = parse({"alerts": {"notifications": {"channels": [{"name": "ops", "url_env": "OPS_URL"}]}}})
    metrics = Metrics(CollectorRegistry())
    with pytest.raises(ConfigError, match=r"channels\[0\]\.url_env: environment variable OPS_URL \(channel ops\) is not set"):
        build_notifier(cfg.alerts, {}, Secret(""), cfg.retry, metrics)
    with pytest.raises(ConfigError) as err:
        build_notifier(cfg.alerts, {"OPS_URL": "nosuchscheme://tok3n@x"}, Secret(""), cfg.retry, metrics)
    assert "channel ops" in str(err.value) and "tok3n" not in str(err.value)
    assert build_notifier(parse({}).alerts, {}, Secret(""), cfg.retry, metrics) is None


def test_the_legacy_webhook_url_is_the_channel_webhook(receivers):
    hook = receivers()
    cfg = parse({"retry": FAST, "alerts": {"webhook": {"url": hook.url}, "notifications": {"renotify_s": 0}}})
    metrics = Metrics(CollectorRegistry())
    n = build_notifier(cfg.alerts, {}, Secret(""), cfg.retry, metrics)
    n.start()
    n.offer(alert(1, severity="warning"))
    assert wait(lambda: len(hook.bodies) == 1)
    n.stop(1)
    assert hook.bodies == [alert(1, severity="warning")] and "X-Pipeline-Signature" not in hook.requests[0][2]
    assert metrics.registry.get_sample_value("pipeline_alert_notifications_sent_total", {"channel": "webhook"}) == 1
    with pytest.raises(ConfigError, match="is used twice"):
        parse({"alerts": {"webhook": {"url": hook.url}, "notifications": {"channels": [{"name": "webhook", "url_env": "X"}]}}})
