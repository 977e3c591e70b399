"""Alert notifications through real channels: email to a local SMTP server (aiosmtpd) from a reading crossing
a threshold in a running pipeline, with a failing channel dead-lettered to Kafka; apprise's Slack, Teams
(workflows) and Telegram plugins against local receivers; apprise deliveries neither follow redirects nor
outlast the deadline.

Slack's and Telegram's hosts are fixed in apprise: these tests repoint the plugins' `webhook_url` and
`notify_url` class attributes at a local HTTP receiver, so the payload is apprise's real one but the
endpoint is ours. Teams workflows take a host: a local HTTPS receiver with a self-signed certificate
(`?verify=no`)."""
from __future__ import annotations

import json
import logging
import socket
import subprocess
import time

import msgspec
import pytest
from aiosmtpd.controller import Controller

from pipeline.config import Secret, Secrets
from pipeline.sinks.notify.channels import AppriseSender
from pipeline.sinks.notify.http import DeliveryError, verify
from pipeline.sinks.notify.policy import Notice
from tests.integration.clients import Publisher, RunningPipeline, read_topic, wait_for
from tests.integration.test_windows_alerts import aligned_past, reading
from tests.unit.sinks.notify.receiver import Receiver, receivers  # noqa: F401 - receivers: a fixture

ALERT = {"event": "opened", "alert_id": 3, "sensor_id": "s1", "metric": "boiler_temp", "type": "threshold",
         "severity": "critical", "message": "boiler_temp of sensor s1 is 61, above the critical maximum 60",
         "timestamp": 1_760_000_000.0, "value": 61.0}


class Mailbox:
    """A local SMTP server; `messages` are the envelopes it accepted."""

    def __init__(self):
        self.messages = []
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's naming
        self.messages.append(envelope)
        return "250 OK"

    def subjects(self) -> list[str]:
        import email

        return [email.message_from_bytes(m.content)["Subject"] for m in self.messages]


@pytest.fixture
def mailbox():
    box = Mailbox()
    yield box
    box.controller.stop()


@pytest.mark.long
def test_a_reading_over_a_threshold_is_emailed_and_a_failing_channel_is_dead_lettered(env, mailbox, monkeypatch):
    monkeypatch.setenv("TEST_ALERT_EMAIL_URL", f"mailto://127.0.0.1:{mailbox.port}?to=ops@example.com&from=pipeline@example.com")
    monkeypatch.setenv("TEST_ALERT_BROKEN_URL", "http://127.0.0.1:9/hook-token-xyz")
    settings = env.migrate(env.settings(
        thresholds={"boiler_temp": {"warning": {"max": 40}, "critical": {"max": 60}}},
        detection={"offline_after_s": 0}, processing={"interval_s": 0.5}, aggregation={"enabled": False},
        alerts={"clear_readings": 2, "notifications": {
            "max_elapsed_s": 0.5, "renotify_s": 600,
            "channels": [{"name": "ops-email", "url_env": "TEST_ALERT_EMAIL_URL", "severities": ["critical"]},
                         {"name": "broken", "url_env": "TEST_ALERT_BROKEN_URL", "types": ["threshold"]}]}}))
    metrics = env.metrics()
    root, t0 = env.root, aligned_past()
    pub = Publisher()
    with RunningPipeline(settings, metrics):
        # s1: critical, then clear twice (resolved); s2: only warning (not routed to the email channel)
        pub.publish_all([reading(root, "s1", "boiler_temp", v, t0 + i) for i, v in enumerate([25, 61, 30, 30])]
                        + [reading(root, "s2", "boiler_temp", 45, t0)])
        wait_for(lambda: len(mailbox.messages) == 2, timeout=30, what="two emails")
        letters = read_topic(settings.config.kafka.topics.dead_letter_exhausted, expected=3, timeout=30)
    pub.close()

    [alert_id] = [r[0] for r in env.query("SELECT id FROM alerts WHERE sensor_id = 's1'")]
    assert mailbox.subjects() == ["[CRITICAL] threshold alert opened: s1 boiler_temp",
                                  "[CRITICAL] threshold alert resolved: s1 boiler_temp"]
    first = mailbox.messages[0]
    assert first.mail_from == "pipeline@example.com" and first.rcpt_tos == ["ops@example.com"]
    assert f"alert {alert_id}, value 61" in first.content.decode()

    by_alert = {}
    for m in letters:
        headers = {k: v.decode() for k, v in m.headers()}
        assert (headers["kind"], headers["reason"], headers["stage"]) == ("retry_exhausted", "notification_failed", "alert_notifier")
        assert headers["error"].startswith("channel=broken: ") and "hook-token-xyz" not in json.dumps(headers)
        body = json.loads(m.value())
        assert body["channel"] == "broken" and "hook-token-xyz" not in m.value().decode()
        by_alert.setdefault(body["alerts"][0]["sensor_id"], []).append(body["alerts"][0]["event"])
    assert by_alert == {"s1": ["opened", "resolved"], "s2": ["opened"]}

    get = metrics.registry.get_sample_value
    assert get("pipeline_alert_notifications_sent_total", {"channel": "ops-email"}) == 2
    assert get("pipeline_alert_notifications_failed_total", {"channel": "broken"}) == 3
    assert get("pipeline_dead_letters_total", {"kind": "retry_exhausted", "reason": "notification_failed"}) == 3


def hooked(env, receivers, monkeypatch, **notifications):
    """A local receiver as the only channel (`hook`) of a pipeline with a warning threshold on boiler_temp."""
    hook = receivers()
    monkeypatch.setenv("TEST_ALERT_HOOK_URL", hook.url)
    settings = env.migrate(env.settings(
        thresholds={"boiler_temp": {"warning": {"max": 40}}}, detection={"offline_after_s": 0},
        processing={"interval_s": 0.5}, aggregation={"enabled": False},
        alerts={"notifications": {**notifications, "channels": [{"name": "hook", "url_env": "TEST_ALERT_HOOK_URL"}]}}))
    return hook, settings


def test_a_storm_of_50_alerts_reaches_a_signed_webhook_as_5_messages_and_one_digest(env, receivers, monkeypatch):
    hook, settings = hooked(env, receivers, monkeypatch, digest={"window_s": 3, "max_alerts": 5})
    settings = msgspec.structs.replace(settings, secrets=Secrets.from_env({"ALERT_WEBHOOK_SECRET": "k3y"}))
    metrics = env.metrics()
    root, t0 = env.root, aligned_past()
    pub = Publisher()
    with RunningPipeline(settings, metrics):
        pub.publish_all([reading(root, f"storm-{i:02d}", "boiler_temp", 45, t0) for i in range(50)])
        wait_for(lambda: env.query("SELECT count(*) FROM alerts")[0][0] == 50, what="50 open alerts")
        wait_for(lambda: len(hook.requests) == 6, timeout=20, what="5 messages and a digest")
        time.sleep(4)  # more than a window: nothing else comes
    pub.close()

    assert len(hook.requests) == 6
    for _, body, headers in hook.requests:
        assert verify(b"k3y", headers["X-Pipeline-Timestamp"], headers["X-Pipeline-Signature"], body, time.time())
    singles, digest = hook.bodies[:5], hook.bodies[5]
    assert all(b["event"] == "opened" for b in singles)
    assert digest["event"] == "digest" and digest["count"] == 45
    assert sorted(a["sensor_id"] for a in singles + digest["alerts"]) == [f"storm-{i:02d}" for i in range(50)]
    get = metrics.registry.get_sample_value
    assert get("pipeline_alert_notification_digests_total", {"channel": "hook"}) == 1
    assert get("pipeline_alert_notifications_sent_total", {"channel": "hook"}) == 6


def _repoint(monkeypatch, receiver: Receiver) -> None:
    from apprise.plugins.slack import NotifySlack
    from apprise.plugins.telegram import NotifyTelegram

    base = receiver.url.rsplit("/", 1)[0]
    monkeypatch.setattr(NotifySlack, "webhook_url", f"{base}/services")
    monkeypatch.setattr(NotifyTelegram, "notify_url", f"{base}/bot")


def test_slack_and_telegram_payloads_from_apprise(receivers, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)  # even so, apprise's DEBUG lines (the full URL with its tokens) stay out
    for name in ("apprise", "urllib3"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    slack = receivers(reply=b"ok")  # Slack's webhook answers `ok`
    _repoint(monkeypatch, slack)
    AppriseSender("slack", Secret("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7"), 5).send(Notice("slack", [ALERT]))
    [(method, body, headers)] = slack.requests
    doc = json.loads(body)
    assert method == "POST" and headers["Content-Type"].startswith("application/json")
    [attachment] = doc["attachments"]
    assert attachment["title"] == "[CRITICAL] threshold alert opened: s1 boiler_temp"
    assert attachment["text"].startswith(ALERT["message"]) and attachment["color"] == "#A32037"  # apprise's failure colour

    telegram = receivers(reply=b'{"ok": true, "result": {}}')
    _repoint(monkeypatch, telegram)
    AppriseSender("tg", Secret("tgram://123456789:abcdefg_hijklmnop/12315544/"), 5).send(Notice("tg", [ALERT]))
    [(_, body, _)] = telegram.requests
    doc = json.loads(body)
    assert doc["chat_id"] == 12315544 and "[CRITICAL] threshold alert opened: s1 boiler_temp" in doc["text"]
    assert "TIiajkdnlazkcOXrIdevi7" not in caplog.text and "abcdefg_hijklmnop" not in caplog.text


def test_teams_workflow_payload_over_https(receivers, tmp_path):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(tmp_path / "cert.pem"), "-days", "1", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True)
    teams = receivers()
    teams.use_tls(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    port = teams.httpd.server_address[1]
    digest = Notice("teams", [ALERT, {**ALERT, "alert_id": 4, "sensor_id": "s2"}], digest=True, window_s=60)
    AppriseSender("teams", Secret(f"workflows://127.0.0.1:{port}/abcdef1234/SIGNATURE123?verify=no"), 5).send(digest)
    [(_, body, _)] = teams.requests
    card = json.loads(body)["attachments"][0]["content"]
    texts = [b.get("text", "") for b in card["body"]]
    assert card["type"] == "AdaptiveCard" and "2 alert notifications within 60 s" in texts
    # one line per alert (apprise escapes the text as Markdown for Teams: boiler\_temp)
    assert any(t.count("\n") == 1 and "opened: s1 boiler" in t and "opened: s2 boiler" in t for t in texts)


def test_apprise_deliveries_do_not_follow_redirects_nor_outlast_the_deadline(receivers, monkeypatch):
    elsewhere = receivers(reply=b"ok")
    redirecting = receivers(("redirect", elsewhere.url), reply=b"ok")
    _repoint(monkeypatch, redirecting)
    slack = AppriseSender("slack", Secret("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7"), 1.0)
    with pytest.raises(DeliveryError):
        slack.send(Notice("slack", [ALERT]))
    assert len(redirecting.requests) == 1 and elsewhere.requests == []

    drip = receivers("drip", drip_interval_s=0.2)  # the answer would take about 8 s
    _repoint(monkeypatch, drip)
    started = time.monotonic()
    with pytest.raises(DeliveryError) as err:
        slack.send(Notice("slack", [ALERT]))
    took = time.monotonic() - started
    assert "TIMEOUT" in str(err.value) and took < 3.0, (str(err.value), took)


def test_a_snoozed_sensors_alert_is_stored_but_not_notified(env, receivers, monkeypatch):
    # Through the whole path: a snooze in the database (as the API writes it), loaded by the running daemon's
    # alert runner, asked by the notifier before it announces. The other sensor's alert is notified.
    hook, settings = hooked(env, receivers, monkeypatch)
    env.query("INSERT INTO alert_snoozes (sensor_id, until, created_by, note) VALUES "
              "('quiet-1', (now() AT TIME ZONE 'utc') + interval '1 hour', 'maria', 'boiler serviced') RETURNING id")
    metrics = env.metrics()
    root, t0 = env.root, aligned_past()
    pub = Publisher()
    with RunningPipeline(settings, metrics):
        pub.publish_all([reading(root, "quiet-1", "boiler_temp", 45, t0), reading(root, "loud-1", "boiler_temp", 45, t0)])
        wait_for(lambda: env.query("SELECT count(*) FROM alerts")[0][0] == 2, what="both alerts stored")
        wait_for(lambda: len(hook.requests) >= 1, timeout=20, what="the loud sensor's notification")
        time.sleep(2)  # the snoozed one would have been sent by now
    pub.close()

    assert [b["sensor_id"] for b in hook.bodies] == ["loud-1"]
    assert env.query("SELECT a.sensor_id, e.silenced FROM alert_events e JOIN alerts a ON a.id = e.alert_id "
                     "WHERE e.event = 'opened' ORDER BY a.sensor_id") == [("loud-1", None), ("quiet-1", "snoozed")]
    get = metrics.registry.get_sample_value
    assert get("pipeline_alert_notifications_suppressed_total", {"reason": "snoozed"}) == 1
    assert get("pipeline_alert_notifications_sent_total", {"channel": "hook"}) == 1
