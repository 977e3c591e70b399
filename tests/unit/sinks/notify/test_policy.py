"""The notification policy with an injected clock: routing, renotify, resolutions, digests, silencing."""
import pytest

from pipeline.config import ConfigError, parse
from pipeline.sinks.notify.policy import NotificationPolicy, Route

T0 = 1_760_000_000.0


def alert(alert_id=1, event="opened", severity="warning", sensor="s1", metric="temp", type_="threshold"):
    return {"event": event, "alert_id": alert_id, "sensor_id": sensor, "metric": metric, "type": type_,
            "severity": severity, "message": "m", "timestamp": T0, "value": 1.0}


def policy(channels, renotify_s=600.0, window_s=60.0, max_alerts=10, silenced=None, **digest):
    cfg = parse({"alerts": {"notifications": {"channels": channels, "renotify_s": renotify_s,
                                              "digest": {"window_s": window_s, "max_alerts": max_alerts, **digest}}}}
                ).alerts.notifications
    return NotificationPolicy.from_config(cfg, silenced=silenced or (lambda p, now: None))


def sent(result):
    notices, reason = result
    return sorted(n.channel for n in notices), reason


ALL = {"name": "all", "url_env": "A"}


def test_routing_by_severity_type_and_metric():
    p = policy([ALL,
                {"name": "pager", "url_env": "B", "severities": ["critical"]},
                {"name": "boiler", "url_env": "C", "types": ["threshold", "offline"], "metrics": ["boiler_temp"]}])
    assert sent(p.decide(alert(1, severity="warning", metric="temp"), T0)) == (["all"], None)
    assert sent(p.decide(alert(2, severity="critical", metric="boiler_temp", sensor="s2"), T0)) == (["all", "boiler", "pager"], None)
    assert sent(p.decide(alert(3, severity="critical", metric="boiler_temp", type_="rate", sensor="s3"), T0)) == (["all", "pager"], None)
    # an offline alert has no metric: a metric filter does not hide it
    assert sent(p.decide(alert(4, severity="warning", metric=None, type_="offline", sensor="s4"), T0)) == (["all", "boiler"], None)


def test_nothing_routed_is_counted_as_unrouted():
    p = policy([{"name": "pager", "url_env": "B", "severities": ["critical"]}])
    assert sent(p.decide(alert(1, severity="warning"), T0)) == ([], "unrouted")


def test_repeats_within_renotify_are_suppressed_escalation_and_resolutions_go():
    p = policy([ALL], renotify_s=600)
    assert sent(p.decide(alert(1), T0)) == (["all"], None)
    assert sent(p.decide(alert(1, event="flapping"), T0 + 5)) == ([], "renotify")  # the same state again
    assert sent(p.decide(alert(1, event="escalated", severity="critical"), T0 + 10)) == (["all"], None)  # news
    assert sent(p.decide(alert(1, event="resolved", severity="critical"), T0 + 20)) == (["all"], None)
    assert sent(p.decide(alert(1, event="resolved", severity="critical"), T0 + 21)) == ([], "duplicate")
    # reopened (a new alert id, the same sensor/metric/type) within the interval: the repeat people keep getting
    assert sent(p.decide(alert(2), T0 + 30)) == ([], "renotify")
    assert sent(p.decide(alert(2, severity="critical"), T0 + 40)) == ([], "renotify")  # critical was told at T0+10
    # ... its resolution still goes, once
    assert sent(p.decide(alert(2, event="resolved"), T0 + 50)) == (["all"], None)
    # after the interval the alert is announced again; another sensor was never held back
    assert sent(p.decide(alert(3), T0 + 10 + 600)) == (["all"], None)
    assert sent(p.decide(alert(4, sensor="s2"), T0 + 31)) == (["all"], None)


def test_renotify_zero_sends_every_state():
    p = policy([ALL], renotify_s=0)
    assert sent(p.decide(alert(1), T0)) == (["all"], None)
    assert sent(p.decide(alert(2), T0)) == (["all"], None)


def test_a_storm_becomes_one_digest_per_channel_after_max_alerts():
    p = policy([ALL, {"name": "pager", "url_env": "B", "severities": ["critical"]}], max_alerts=5, window_s=60)
    immediate = []
    for i in range(50):
        notices, reason = p.decide(alert(i, sensor=f"s{i}", severity="critical"), T0 + i * 0.1)
        assert reason is None
        immediate += notices
    assert len(immediate) == 10  # five per channel went at once, before the storm was known
    assert p.due("all", T0 + 59) is None  # the window is not over
    d = p.due("all", T0 + 5 + 60)
    assert d.digest and len(d.alerts) == 45 and [a["sensor_id"] for a in d.alerts][:2] == ["s5", "s6"]
    assert len(p.due("pager", T0 + 5 + 60).alerts) == 45
    # still in digest mode for one more window: a late straggler waits for the next digest ...
    assert p.decide(alert(99, sensor="s99", severity="critical"), T0 + 70)[0] == []
    assert [a["alert_id"] for a in p.due("all", T0 + 126).alerts] == [99]
    # ... and after a quiet window the channel sends one message per alert again
    assert p.due("all", T0 + 190) is None
    assert sent(p.decide(alert(100, sensor="s100", severity="warning"), T0 + 300)) == (["all"], None)


def test_a_digest_lists_at_most_max_listed_alerts_and_counts_the_rest():
    p = policy([ALL], max_alerts=1, window_s=60)  # max_listed: the default, 50
    for i in range(1001):
        p.decide(alert(i, sensor=f"s{i}"), T0 + i * 0.01)
    d = p.due("all", T0 + 61)
    assert [a["alert_id"] for a in d.alerts] == list(range(1, 51))  # the first 50 of the window
    assert d.more == 950 and d.count == 1000
    # the next window starts empty
    p.decide(alert(2000, sensor="x"), T0 + 70)
    d = p.due("all", T0 + 122)
    assert [a["alert_id"] for a in d.alerts] == [2000] and d.more == 0
    small = policy([ALL], max_alerts=1, max_listed=3)
    for i in range(6):
        small.decide(alert(i, sensor=f"s{i}"), T0)
    d = small.due("all", T0, force=True)
    assert len(d.alerts) == 3 and d.more == 2


def test_max_listed_is_validated_with_the_key_named():
    with pytest.raises(ConfigError, match="max_listed"):
        policy([ALL], max_listed=0)


def test_below_the_digest_limit_every_alert_goes_at_once():
    p = policy([ALL], max_alerts=10, window_s=60)
    for i in range(10):
        assert sent(p.decide(alert(i, sensor=f"s{i}"), T0 + i * 7)) == (["all"], None)
    assert p.due("all", T0 + 1000) is None


def test_shutdown_forces_the_collected_digest_out():
    p = policy([ALL], max_alerts=1)
    p.decide(alert(1, sensor="a"), T0)
    p.decide(alert(2, sensor="b"), T0 + 1)
    assert p.due("all", T0 + 2) is None
    assert [a["alert_id"] for a in p.due("all", T0 + 2, force=True).alerts] == [2]


def test_silenced_alerts_are_not_sent_and_counted_by_reason():
    calls = []
    reasons = {1: "snoozed", 2: "maintenance", 3: "Not A Label!"}

    def silenced(payload, now):
        calls.append((payload["alert_id"], now))
        return reasons.get(payload["alert_id"])

    p = policy([ALL], silenced=silenced)
    assert sent(p.decide(alert(1, sensor="a"), T0)) == ([], "snoozed")
    assert sent(p.decide(alert(2, sensor="b"), T0 + 1)) == ([], "maintenance")
    assert sent(p.decide(alert(3, sensor="c"), T0 + 2)) == ([], "silenced")  # an unbounded reason is not a label
    assert sent(p.decide(alert(4, sensor="d"), T0 + 3)) == (["all"], None)
    assert calls == [(1, T0), (2, T0 + 1), (3, T0 + 2), (4, T0 + 3)]
    # a silenced alert is not remembered as notified: once the snooze ends it is announced
    del reasons[1]
    assert sent(p.decide(alert(1, sensor="a", event="flapping"), T0 + 10)) == (["all"], None)


def test_a_failing_silencer_does_not_swallow_alerts():
    def broken(payload, now):
        raise RuntimeError("snooze store away")

    p = policy([ALL], silenced=broken)
    assert sent(p.decide(alert(1), T0)) == (["all"], None)


def test_route_from_legacy_webhook_takes_everything():
    r = Route("webhook", frozenset(("warning", "critical")))
    assert r.accepts(alert(severity="warning")) and r.accepts(alert(severity="critical", metric=None))


def test_a_digest_text_lists_the_alerts_it_holds_and_counts_the_rest():
    from pipeline.sinks.notify.channels import render
    from pipeline.sinks.notify.policy import Notice

    title, body, _kind = render(Notice("all", [alert(i, sensor=f"s{i}") for i in range(3)], digest=True, window_s=60, more=7))
    assert title.startswith("10 alert notifications")
    assert body.count("\n") == 3 and body.endswith("... and 7 more")
