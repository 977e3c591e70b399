// Acknowledge, snooze and unsnooze from any page: buttons with class ack, snooze or unsnooze open one dialog
// asking who (remembered for the tab), a note and, to snooze, what (the alert, its sensor, its rule) and how
// long. Changes go to the API with the Bearer token saved in the header form; on success the page hears an
// "alerts-changed" event and refreshes its lists.
"use strict";

(() => {
  const WHO_KEY = "pipeline-dashboard-who";
  const $ = (id) => document.getElementById(id);
  let pending = null;  // {kind, alertId, sensorId, metric, type, snoozeId}

  function option(value, text) {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = text;
    return o;
  }

  function openDialog(kind, data) {
    const dialog = $("action-dialog");
    if (!dialog) return;
    if (document.body.dataset.tokenConfigured !== "yes") {
      Dash.showMessage("Changes are disabled: DASHBOARD_TOKEN is not set on the server.", true);
      return;
    }
    pending = {kind, ...data};
    const subject = data.snoozeId ? `snooze ${data.snoozeId}` :
      `alert ${data.alertId} · ${data.sensorId}` + (data.type ? ` · ${data.type}` : "") + (data.metric ? ` · ${data.metric}` : "");
    $("action-title").textContent = {ack: "Acknowledge", snooze: "Snooze", unsnooze: "Unsnooze"}[kind];
    $("action-subject").textContent = subject;
    const scope = $("action-scope");
    if (kind === "snooze") {
      scope.replaceChildren(option("alert", "this alert"), option("sensor", `every alert of sensor ${data.sensorId}`),
                            option("rule", `every ${data.type}${data.metric ? " · " + data.metric : ""} alert (any sensor)`));
    }
    $("action-scope-row").classList.toggle("hidden", kind !== "snooze");
    $("action-duration-row").classList.toggle("hidden", kind !== "snooze");
    $("action-who").value = sessionStorage.getItem(WHO_KEY) || "";
    $("action-note").value = "";
    dialog.showModal();
    (($("action-who").value ? $("action-note") : $("action-who"))).focus();
  }

  function request() {
    const who = $("action-who").value.trim(), note = $("action-note").value.trim();
    const p = pending;
    if (p.kind === "ack") return {method: "POST", url: `/api/alerts/${encodeURIComponent(p.alertId)}/ack`, body: {who, note}};
    if (p.kind === "unsnooze") return {method: "DELETE", url: `/api/snoozes/${encodeURIComponent(p.snoozeId)}`, body: {who, note}};
    const duration_s = Number($("action-duration").value), scope = $("action-scope").value;
    if (scope === "alert") {
      return {method: "POST", url: `/api/alerts/${encodeURIComponent(p.alertId)}/snooze`, body: {duration_s, who, note}};
    }
    const body = scope === "sensor" ? {sensor_id: p.sensorId} : {rule: {type: p.type, ...(p.metric ? {metric: p.metric} : {})}};
    return {method: "POST", url: "/api/snoozes", body: {...body, duration_s, who, note}};
  }

  async function submit(event) {
    event.preventDefault();
    const secret = Dash.token.get();
    if (!secret) { Dash.showMessage("Enter the dashboard token (top right) first.", true); $("action-dialog").close(); return; }
    const who = $("action-who").value.trim();
    if (!who) { $("action-who").focus(); return; }
    sessionStorage.setItem(WHO_KEY, who);
    const req = request();
    $("action-dialog").close();
    const response = await fetch(req.url, {
      method: req.method, body: JSON.stringify(req.body),
      headers: {"Authorization": "Bearer " + secret, "Content-Type": "application/json", "Accept": "application/json"},
    });
    let body = {};
    try { body = await response.json(); } catch (_) { body = {}; }
    const done = {ack: "acknowledged", snooze: "snoozed", unsnooze: "unsnoozed"}[pending.kind];
    if (response.ok) Dash.showMessage(`${$("action-subject").textContent}: ${done}.`, false);
    else if (response.status === 401) Dash.showMessage("The token was refused.", true);
    else Dash.showMessage(body.error || `Failed (HTTP ${response.status}).`, response.status !== 409);
    document.dispatchEvent(new CustomEvent("alerts-changed"));
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button.ack, button.snooze, button.unsnooze");
    if (!button) return;
    const d = button.dataset;
    const kind = button.classList.contains("ack") ? "ack" : button.classList.contains("snooze") ? "snooze" : "unsnooze";
    openDialog(kind, {alertId: d.alertId, sensorId: d.sensorId, metric: d.metric || "", type: d.type || "", snoozeId: d.snoozeId});
  });

  document.addEventListener("DOMContentLoaded", () => {
    const form = $("action-form");
    if (!form) return;
    form.addEventListener("submit", submit);
    $("action-cancel").addEventListener("click", () => $("action-dialog").close());
  });
})();
