"""The workflow endpoints through the Flask test client over a fake view: the token (401, 403), who and
duration checked before the view is asked, outcomes mapped to 404 and 409, the state filter passed on."""
from __future__ import annotations

import pytest

from tests.unit.dashboard.test_app import BEARER, FakeView, alert, client_for

WHO = {"who": "maria", "note": "on it"}


class WorkflowView(FakeView):
    def acknowledge_alert(self, alert_id, who, note):
        self.calls.append(("ack", alert_id, who, note))
        return {1: ("acknowledged", alert(1)), 3: ("already_resolved", alert(3, resolved=True))}.get(alert_id, ("not_found", None))

    def snooze_alert(self, alert_id, duration_s, who, note):
        self.calls.append(("snooze_alert", alert_id, duration_s, who, note))
        return ("snoozed", {"id": 9, "alert_id": alert_id}) if alert_id == 1 else ("not_found", None)

    def snooze(self, sensor_id, metric, type_, duration_s, who, note):
        self.calls.append(("snooze", sensor_id, metric, type_, duration_s, who, note))
        return {"id": 10, "sensor_id": sensor_id, "metric": metric, "type": type_}

    def unsnooze(self, snooze_id, who, note):
        self.calls.append(("unsnooze", snooze_id, who, note))
        return {10: ("unsnoozed", {"id": 10}), 11: ("already_ended", {"id": 11})}.get(snooze_id, ("not_found", None))


@pytest.fixture
def view():
    return WorkflowView()


@pytest.fixture
def client(view):
    return client_for(view)


WRITES = [("post", "/api/alerts/1/ack", WHO), ("post", "/api/alerts/1/snooze", {**WHO, "duration_s": 60}),
          ("post", "/api/snoozes", {**WHO, "sensor_id": "hall-1", "duration_s": 60}), ("delete", "/api/snoozes/10", WHO)]


@pytest.mark.parametrize("method, url, body", WRITES)
def test_writes_need_the_bearer_token(client, view, method, url, body):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = getattr(client, method)(url, json=body, headers=headers)
        assert r.status_code == 401
    assert view.calls == []


@pytest.mark.parametrize("method, url, body", WRITES)
def test_writes_are_disabled_without_a_configured_token(view, method, url, body):
    r = getattr(client_for(view, token=""), method)(url, json=body, headers={"Authorization": "Bearer "})
    assert r.status_code == 403 and view.calls == []


def test_outcomes_map_to_status_codes(client, view):
    assert client.post("/api/alerts/1/ack", json=WHO, headers=BEARER).status_code == 200
    assert client.post("/api/alerts/3/ack", json=WHO, headers=BEARER).status_code == 409
    assert client.post("/api/alerts/42/ack", json=WHO, headers=BEARER).json == {"error": "no alert 42", "status": 404,
                                                                               "alert": None}
    assert client.post("/api/alerts/1/snooze", json={**WHO, "duration_s": 3600}, headers=BEARER).json["snooze"]["id"] == 9
    assert client.post("/api/alerts/42/snooze", json={**WHO, "duration_s": 3600}, headers=BEARER).status_code == 404
    r = client.post("/api/snoozes", json={**WHO, "rule": {"metric": "humidity", "type": "stuck"}, "duration_s": 90},
                    headers=BEARER)
    assert r.status_code == 201 and r.json["snooze"]["id"] == 10
    assert client.delete("/api/snoozes/10", json=WHO, headers=BEARER).status_code == 200
    assert client.delete("/api/snoozes/11", json=WHO, headers=BEARER).status_code == 409
    assert client.delete("/api/snoozes/12", json=WHO, headers=BEARER).status_code == 404
    assert ("ack", 1, "maria", "on it") in view.calls
    assert ("snooze", None, "humidity", "stuck", 90.0, "maria", "on it") in view.calls


@pytest.mark.parametrize("url, body, parameter", [
    ("/api/alerts/1/ack", {}, "who"),
    ("/api/alerts/1/ack", {"who": "   "}, "who"),
    ("/api/alerts/1/ack", {"who": 5}, "who"),
    ("/api/alerts/1/ack", {"who": "x" * 101}, "who"),
    ("/api/alerts/1/ack", {"who": "m", "note": "a\x00b"}, "note"),
    ("/api/alerts/x/ack", WHO, "id"),
    ("/api/alerts/1/snooze", WHO, "duration_s"),
    ("/api/alerts/1/snooze", {**WHO, "duration_s": True}, "duration_s"),
    ("/api/alerts/1/snooze", {**WHO, "duration_s": "60"}, "duration_s"),
    ("/api/alerts/1/snooze", {**WHO, "duration_s": 91 * 86400}, "duration_s"),
    ("/api/snoozes", {**WHO, "duration_s": 60}, "sensor_id"),
    ("/api/snoozes", {**WHO, "duration_s": 60, "rule": "humidity"}, "rule"),
    ("/api/snoozes", {**WHO, "duration_s": 60, "rule": {"metric": "1bad"}}, "metric"),
    ("/api/snoozes", {**WHO, "duration_s": 60, "rule": {"type": "Threshold; DROP"}}, "type"),
])
def test_bad_bodies_are_400_naming_the_parameter(client, view, url, body, parameter):
    r = client.post(url, json=body, headers=BEARER)
    assert r.status_code == 400 and r.json["parameter"] == parameter, r.json
    assert view.calls == []


def test_state_filter_is_checked_and_passed_on(client, view):
    assert client.get("/api/alerts?state=snoozed").status_code == 200
    assert view.calls[-1] == ("alerts", "open", None, None, 100, "snoozed")
    r = client.get("/api/alerts?state=sleeping")
    assert r.status_code == 400 and r.json["parameter"] == "state"
    assert client.get("/alerts?state=acknowledged").status_code == 200
    assert ("alerts", "open", None, None, 100, "acknowledged") in view.calls
