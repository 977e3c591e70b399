// Shared helpers for the dashboard pages. Data is only ever inserted with textContent (never as HTML).
"use strict";

const Dash = (() => {
  const TOKEN_KEY = "pipeline-dashboard-token";

  // el("td", {className: "x"}, "text", child): build an element; strings become text nodes.
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (key === "dataset") Object.assign(node.dataset, value);
        else node[key] = value;
      }
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fmtTime(epoch) {
    if (epoch === null || epoch === undefined) return "";
    const d = new Date(epoch * 1000);
    return d.toLocaleTimeString([], {hour12: false}) + (Date.now() - d > 86400000 ? " " + d.toLocaleDateString() : "");
  }

  function fmtAgo(seconds) {
    if (seconds === null || seconds === undefined) return "never";
    if (seconds < 1) return "just now";
    if (seconds < 90) return Math.round(seconds) + " s ago";
    if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
    return Math.round(seconds / 3600) + " h ago";
  }

  function fmtDuration(seconds) {
    const s = Math.floor(seconds);
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    return `${m}m ${s % 60}s`;
  }

  function fmtNum(value, digits = 1) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    if (Math.abs(value) >= 1000) return Math.round(value).toLocaleString();
    return Number(value.toFixed(digits)).toString();
  }

  async function getJSON(url) {
    const response = await fetch(url, {headers: {"Accept": "application/json"}, cache: "no-store"});
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    return {status: response.status, ok: response.ok, body};
  }

  const token = {
    get: () => sessionStorage.getItem(TOKEN_KEY) || "",
    set: (value) => value ? sessionStorage.setItem(TOKEN_KEY, value) : sessionStorage.removeItem(TOKEN_KEY),
  };

  function setupTokenForm() {
    const form = document.getElementById("token-form");
    if (!form) return;
    const input = document.getElementById("token-input");
    const state = document.getElementById("token-state");
    const show = () => { state.textContent = token.get() ? "saved for this tab" : "needed to resolve"; };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      token.set(input.value.trim());
      input.value = "";
      show();
    });
    show();
  }

  // POST /api/alerts/<id>/resolve with the Bearer token; returns {ok, message}.
  async function resolveAlert(id) {
    if (document.body.dataset.tokenConfigured !== "yes") {
      return {ok: false, message: "Resolving is disabled: DASHBOARD_TOKEN is not set on the server."};
    }
    const secret = token.get();
    if (!secret) return {ok: false, message: "Enter the dashboard token (top right) to resolve alerts."};
    const response = await fetch(`/api/alerts/${encodeURIComponent(id)}/resolve`, {
      method: "POST", headers: {"Authorization": "Bearer " + secret, "Accept": "application/json"},
    });
    let body = {};
    try { body = await response.json(); } catch (_) { body = {}; }
    if (response.ok) return {ok: true, message: `Alert ${id} resolved.`};
    if (response.status === 401) return {ok: false, message: "The token was refused."};
    if (response.status === 409) return {ok: true, message: `Alert ${id} was already resolved.`};
    return {ok: false, message: body.error || `Resolving failed (HTTP ${response.status}).`};
  }

  function showMessage(text, isError) {
    const box = document.getElementById("alert-message");
    if (!box) return;
    box.textContent = text;
    box.classList.toggle("error", Boolean(isError));
    box.classList.remove("hidden");
    clearTimeout(showMessage.timer);
    showMessage.timer = setTimeout(() => box.classList.add("hidden"), 6000);
  }

  document.addEventListener("DOMContentLoaded", setupTokenForm);
  return {el, fmtTime, fmtAgo, fmtDuration, fmtNum, getJSON, token, resolveAlert, showMessage};
})();
