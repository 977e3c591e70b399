"""The dashboard in a real browser (Debian's chromium driven by Playwright) while readings flow through a
running pipeline: the throughput number moves, a sensor's history opens, an alert is resolved with the
button, another acknowledged and a third snoozed and unsnoozed through the dialog, the state filter shows
each, nothing from the data runs as script. Screenshots go to artifacts/."""
from __future__ import annotations

import json
import math
import random
import shutil
import threading
import time
from pathlib import Path

import msgspec
import pytest

from pipeline.config import Secrets
from tests.integration.clients import Publisher, RunningPipeline
from tests.integration.conftest import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "artifacts"
TOKEN = "browser-test-token"
SENSORS = ["hall-1", "hall-2", "cold-room", "roof"]
XSS_SENSOR = "<script>window.__xss=1</script>"
XSS_MESSAGE = '<img src=x onerror="window.__xss=1"> humidity sensor stuck'

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.txt")


def _seed(env, now: float) -> dict[str, int]:
    """Sensors, an hour of 1m/5m aggregations (what the aggregator writes) and three open alerts."""
    with env.db() as conn:
        for sid in SENSORS:
            conn.execute("INSERT INTO sensors (sensor_id, type, location) VALUES (%s, 'environment', %s)",
                         (sid, sid.replace("-", " ")))
        conn.execute("INSERT INTO sensors (sensor_id, type) VALUES (%s, 'odd')", (XSS_SENSOR,))
        rows = []
        for n, sid in enumerate(SENSORS):
            for period, step in (("1m", 60), ("5m", 300)):
                for k in range(3600 // step):
                    ts = now - 3600 + k * step
                    base = 20 + n * 2 + 3 * math.sin(ts / 600 + n)
                    rows.append((sid, "temperature", base, base - 0.8, base + 0.9, step, period, ts))
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO aggregations (sensor_id, metric, avg_value, min_value, max_value, count, period, "
                            "timestamp) VALUES (%s, %s, %s, %s, %s, %s, %s, to_timestamp(%s) AT TIME ZONE 'utc')", rows)

        def alert(sid, kind, message, severity, age_s):
            return conn.execute("INSERT INTO alerts (sensor_id, type, message, severity, timestamp) VALUES "
                                "(%s, %s, %s, %s, to_timestamp(%s) AT TIME ZONE 'utc') RETURNING id",
                                (sid, kind, message, severity, now - age_s)).fetchone()[0]

        ids = {"critical": alert("cold-room", "threshold", "temperature 9.5 C above critical max 8 C", "critical", 120),
               "warning": alert("hall-2", "anomaly", XSS_MESSAGE, "warning", 30),
               "info": alert("roof", "stale", "no reading for 90 s", "info", 600)}
        conn.execute("INSERT INTO alerts (sensor_id, type, message, severity, timestamp, resolved, resolved_at) VALUES "
                     "('hall-1', 'threshold', 'humidity 91 % above warning max 85 %', 'warning', "
                     "now() AT TIME ZONE 'utc' - interval '2 hours', true, now() AT TIME ZONE 'utc' - interval '1 hour')")
    # A sensor whose id is markup, as another writer could leave it in Redis: it must show as text.
    prefix = f"t{env.run_id}:"
    env.redis.hset(f"{prefix}latest:{XSS_SENSOR}", mapping={"type": "odd", "location": "<b>nowhere</b>",
                                                             "temperature": "1.0", "temperature:ts": repr(now)})
    env.redis.sadd(f"{prefix}sensors", XSS_SENSOR)
    return ids


def _publish(root: str, stop: threading.Event) -> None:
    """About 20 readings a second from four sensors, the rate wandering so the live numbers move."""
    pub = Publisher()
    rng = random.Random(5)
    try:
        k = 0
        while not stop.is_set():
            batch = []
            for n, sid in enumerate(SENSORS):
                t = time.time()
                batch.append((f"{root}/{sid}", json.dumps({
                    "type": "environment", "location": sid.replace("-", " "), "timestamp": t,
                    "readings": {"temperature": round(20 + n * 2 + 3 * math.sin(t / 600 + n) + rng.uniform(-0.3, 0.3), 2),
                                 "humidity": round(45 + 10 * math.sin(t / 300 + n), 1)}})))
            if k % 25 == 0:  # now and then a reading from a device with a hostile id: dead-lettered, shown as text
                batch.append((f"{root}/<script>alert(1)</script>", "21.5"))
            pub.publish_all(batch)
            k += 1
            stop.wait(rng.uniform(0.1, 0.4))
    finally:
        pub.close()


def _rate(page) -> str:
    return page.inner_text("#stat-rate").strip()


@pytest.mark.long
def test_dashboard_in_a_real_browser(env):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed: run scripts/ensure-test-tools.sh (Debian package chromium)")
    settings = env.settings(dashboard={"enabled": True, "port": 0})
    settings = msgspec.structs.replace(settings, secrets=Secrets.from_env({"DASHBOARD_TOKEN": TOKEN}))
    env.migrate(settings)
    ids = _seed(env, time.time())
    ARTIFACTS.mkdir(exist_ok=True)
    stop = threading.Event()
    publisher = threading.Thread(target=_publish, args=(env.root, stop), daemon=True)
    with RunningPipeline(settings, env.metrics()) as pipeline, sync_api.sync_playwright() as pw:
        publisher.start()
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        problems: list[str] = []
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
            page.goto(pipeline.dashboard.url + "/")

            # Live: the throughput number shows traffic, then changes as the rate wanders.
            page.wait_for_function("() => { const t = document.getElementById('stat-rate').textContent;"
                                   " return t !== '–' && Number(t.replace(/,/g, '')) > 0; }", timeout=30000)
            first = _rate(page)
            page.wait_for_function("(first) => document.getElementById('stat-rate').textContent !== first",
                                   arg=first, timeout=20000)
            assert _rate(page) != first
            page.wait_for_selector("#health-checks li[data-check='postgres'].ok", timeout=15000)
            assert page.locator("#ready-badge").inner_text() == "ready"

            # Sensors: the table fills; clicking a sensor opens its history with the min/max band.
            page.wait_for_selector("#sensor-table tr[data-sensor-id='hall-1']", timeout=15000)
            page.click("#sensor-table tr[data-sensor-id='hall-1'] button")
            page.wait_for_function("() => Number(document.getElementById('history-source').dataset.points || 0) >= 30",
                                   timeout=15000)
            assert "of 1m, from aggregations" in page.inner_text("#history-source")
            page.click("#period-select button[data-period='5m']")
            page.wait_for_function("() => document.getElementById('history-source').textContent.includes('of 5m')",
                                   timeout=15000)
            assert page.locator("#chart-history canvas").count() == 1
            # A week at 1m would be more points than the API gives: the page takes 5m by itself.
            page.click("#period-select button[data-period='1m']")
            page.wait_for_function("() => document.getElementById('history-source').textContent.includes('of 1m')",
                                   timeout=15000)
            page.select_option("#history-range", "604800")
            page.wait_for_function("() => document.getElementById('history-source').textContent.includes('of 5m')",
                                   timeout=15000)
            assert page.locator("#period-select button.active").inner_text() == "5m"
            page.select_option("#history-range", "3600")
            page.fill("#sensor-filter", "hall")
            page.wait_for_function("() => document.querySelectorAll('#sensor-table tbody tr').length === 2", timeout=10000)
            page.fill("#sensor-filter", "")

            # Hostile text shows as text: the sensor id, its location, the alert message and the dead letter.
            page.wait_for_selector("#open-alerts-table tr[data-alert-id='%d']" % ids["warning"], timeout=15000)
            page.wait_for_function("(id) => [...document.querySelectorAll('#sensor-table tbody tr')]"
                                   ".some(r => r.dataset.sensorId === id)", arg=XSS_SENSOR, timeout=15000)
            assert XSS_SENSOR in page.inner_text("#sensor-table")
            assert XSS_MESSAGE in page.inner_text("#open-alerts-table")
            page.wait_for_function("() => document.getElementById('recent-errors').textContent.includes('sensor_id_invalid')",
                                   timeout=20000)
            assert "<script>alert(1)<" in page.inner_text("#recent-errors")
            assert page.evaluate("window.__xss") is None

            # Alerts: open ones most severe first; resolve the critical one with the button.
            order = page.eval_on_selector_all("#open-alerts-table tbody tr", "rows => rows.map(r => Number(r.dataset.alertId))")
            # The seeded alerts in order; any other the live readings opened (a detector on a loaded box) is shown
            # too, and named here so a failure says what it was.
            others = [i for i in order if i not in ids.values()]
            assert [i for i in order if i in ids.values()] == [ids["critical"], ids["warning"], ids["info"]], \
                env.query("SELECT id, sensor_id, metric, type, severity, message FROM alerts")
            if others:
                print("alerts the live readings opened:", env.query(
                    "SELECT id, sensor_id, metric, type, severity, message FROM alerts WHERE id = ANY(%s)", (others,)))
            page.fill("#token-input", TOKEN)
            page.click("#token-save")
            page.click("#open-alerts-table button.resolve[data-alert-id='%d']" % ids["critical"])
            page.wait_for_selector("#open-alerts-table tr[data-alert-id='%d']" % ids["critical"], state="detached",
                                   timeout=10000)
            page.wait_for_selector("#resolved-alerts-table tr[data-alert-id='%d']" % ids["critical"], timeout=10000)
            assert "resolved" in page.inner_text("#alert-message")
            assert env.query("SELECT resolved, resolved_at IS NOT NULL FROM alerts WHERE id = %s", (ids["critical"],)) == [(True, True)]

            # Acknowledge through the dialog: who and a note, stored with the alert and in its history.
            page.click("#open-alerts-table button.ack[data-alert-id='%d']" % ids["warning"])
            page.wait_for_selector("#action-dialog[open]", timeout=5000)
            page.fill("#action-who", "maria")
            page.fill("#action-note", "looking at the hall sensor")
            page.click("#action-submit")
            page.wait_for_function("(id) => { const r = document.querySelector(`#open-alerts-table tr[data-alert-id='${id}']`);"
                                   " return r !== null && r.textContent.includes('acknowledged by maria'); }",
                                   arg=ids["warning"], timeout=10000)
            assert "acknowledged" in page.inner_text("#alert-message")
            assert page.locator("#open-alerts-table button.ack[data-alert-id='%d']" % ids["warning"]).count() == 0
            assert env.query("SELECT acknowledged_by FROM alerts WHERE id = %s", (ids["warning"],)) == [("maria",)]
            silences = pipeline.alerts.silences  # the daemon's own, told by the API at once
            info = {"event": "escalated", "alert_id": ids["info"], "sensor_id": "roof", "metric": None, "type": "stale"}
            assert silences.silenced({**info, "alert_id": ids["warning"], "sensor_id": "hall-2"}, time.time()) == "acknowledged"
            assert env.query("SELECT event, who, note FROM alert_events WHERE alert_id = %s",
                             (ids["warning"],)) == [("ack", "maria", "looking at the hall sensor")]
            # Snooze the info alert for an hour; the name is remembered for the tab.
            page.click("#open-alerts-table button.snooze[data-alert-id='%d']" % ids["info"])
            page.wait_for_selector("#action-dialog[open]", timeout=5000)
            assert page.input_value("#action-who") == "maria"
            page.select_option("#action-scope", "alert")
            page.select_option("#action-duration", "3600")
            page.fill("#action-note", "roof works until noon")
            page.click("#action-submit")
            page.wait_for_selector("#snoozes-table tbody tr", timeout=10000)
            assert "alert %d" % ids["info"] in page.inner_text("#snoozes-table")
            page.wait_for_function("(id) => { const r = document.querySelector(`#open-alerts-table tr[data-alert-id='${id}']`);"
                                   " return r !== null && r.textContent.includes('snoozed until'); }", arg=ids["info"], timeout=10000)
            until, who, note = env.query("SELECT extract(epoch FROM until - (now() AT TIME ZONE 'utc')), created_by, note "
                                         "FROM alert_snoozes WHERE alert_id = %s", (ids["info"],))[0]
            assert 3500 < until <= 3600 and (who, note) == ("maria", "roof works until noon")
            assert silences.silenced(info, time.time()) == "snoozed"
            # The state filter: acknowledged, snoozed, open (needs someone: neither).
            shown = "() => [...document.querySelectorAll('#open-alerts-table tbody tr')].map(r => Number(r.dataset.alertId))"
            page.select_option("#alert-state", "acknowledged")
            page.wait_for_function(f"(want) => JSON.stringify(({shown})()) === JSON.stringify(want)", arg=[ids["warning"]],
                                   timeout=10000)
            page.select_option("#alert-state", "snoozed")
            page.wait_for_function(f"(want) => JSON.stringify(({shown})()) === JSON.stringify(want)", arg=[ids["info"]],
                                   timeout=10000)
            page.select_option("#alert-state", "open")
            page.wait_for_function(f"(ids) => !({shown})().some(id => ids.includes(id))", arg=[ids["warning"], ids["info"]],
                                   timeout=10000)
            page.select_option("#alert-state", "")
            page.wait_for_selector("#open-alerts-table tr[data-alert-id='%d']" % ids["info"], timeout=10000)
            # Unsnooze from the table of snoozes in force.
            page.click("#snoozes-table button.unsnooze")
            page.wait_for_selector("#action-dialog[open]", timeout=5000)
            page.fill("#action-note", "works done early")
            page.click("#action-submit")
            page.wait_for_selector("#snoozes", state="hidden", timeout=10000)
            assert env.query("SELECT event, who, note FROM alert_events WHERE alert_id = %s ORDER BY id", (ids["info"],)) == [
                ("snooze", "maria", "roof works until noon"), ("unsnooze", "maria", "works done early")]
            assert env.query("SELECT ended_by FROM alert_snoozes WHERE alert_id = %s", (ids["info"],)) == [("maria",)]
            assert silences.silenced(info, time.time()) is None
            page.wait_for_timeout(1500)  # let the charts take a few more points for the screenshot
            page.screenshot(path=str(ARTIFACTS / "dashboard-laptop.png"), full_page=True)

            # The alerts page, rendered on the server, and the dashboard on a phone-sized screen.
            page.goto(pipeline.dashboard.url + "/alerts")
            assert XSS_MESSAGE in page.inner_text("#open-alerts-table")
            assert page.evaluate("window.__xss") is None
            page.screenshot(path=str(ARTIFACTS / "alerts-laptop.png"), full_page=True)
            # Snooze every alert of a sensor from the server-rendered page: it reloads showing the snooze.
            page.click("#open-alerts-table button.snooze[data-alert-id='%d']" % ids["info"])
            page.wait_for_selector("#action-dialog[open]", timeout=5000)
            page.select_option("#action-scope", "sensor")
            page.select_option("#action-duration", "900")
            page.fill("#action-note", "roof again")
            page.screenshot(path=str(ARTIFACTS / "alerts-snooze-dialog.png"))
            page.click("#action-submit")
            page.wait_for_selector("#snoozes-table tr[data-snooze-id]", timeout=10000)
            assert "sensor roof" in page.inner_text("#snoozes-table")
            assert "snoozed until" in page.inner_text("#open-alerts-table tr[data-alert-id='%d']" % ids["info"])
            assert env.query("SELECT alert_id, sensor_id, created_by, note FROM alert_snoozes WHERE ended_at IS NULL") == [
                (None, "roof", "maria", "roof again")]
            page.click("#open-alerts-table button.resolve[data-alert-id='%d']" % ids["info"])  # the token is kept for the tab
            page.wait_for_selector("#resolved-alerts-table tr[data-alert-id='%d']" % ids["info"], timeout=10000)
            assert page.locator("#open-alerts-table tr[data-alert-id='%d']" % ids["info"]).count() == 0
            phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                     has_touch=True)
            phone.on("console", lambda m: problems.append(f"phone console.{m.type}: {m.text}") if m.type == "error" else None)
            phone.on("pageerror", lambda e: problems.append(f"phone pageerror: {e}"))
            phone.goto(pipeline.dashboard.url + "/")
            phone.wait_for_selector("#sensor-table tr[data-sensor-id='hall-1']", timeout=15000)
            phone.wait_for_selector("#health-checks li", timeout=15000)
            # Nothing wider than the screen except inside the scrollable table wrappers.
            overflow = phone.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            phone.wait_for_timeout(1500)
            phone.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
            assert overflow <= 0, f"page is {overflow}px wider than a phone screen"
        finally:
            stop.set()
            browser.close()
            publisher.join(10)
    assert problems == []
