// The live dashboard: polls the JSON API and draws with uPlot. Every value goes in through textContent.
"use strict";

(() => {
  const {el, fmtTime, fmtAgo, fmtDuration, fmtNum, getJSON} = Dash;
  const HISTORY_S = 300;
  const PERIOD_S = {"1m": 60, "5m": 300, "1h": 3600};
  const MAX_POINTS = 5000;  // as api.py allows
  const $ = (id) => document.getElementById(id);
  const state = {
    live: [[], [], [], [], [], []],   // t, received, consumed, postgres, redis, dead letters (per second)
    latency: [[], [], [], [], []],    // t, p50/p95 postgres, p50/p95 redis (ms)
    charts: {}, sensors: new Map(), sparkMetric: "", selected: null, period: "1m", sparkTick: 0,
  };

  // -- charts ----------------------------------------------------------------------------------
  function width(id) { return Math.max(260, $(id).clientWidth || 300); }

  function lineChart(id, labels, colors, yLabel) {
    const series = [{}].concat(labels.map((label, i) => ({label, stroke: colors[i], width: 2, points: {show: false}})));
    return new uPlot({width: width(id), height: 220, series, legend: {live: false},
                      axes: [{}, {label: yLabel, size: 60}], scales: {x: {time: true}}},
                     [[]].concat(labels.map(() => [])), $(id));
  }

  function sparkline(target) {
    return new uPlot({width: 120, height: 32, legend: {show: false}, cursor: {show: false}, select: {show: false},
                      axes: [{show: false}, {show: false}], scales: {x: {time: false}},
                      series: [{}, {stroke: "#2f6fb0", width: 1.5, points: {show: false}}]}, [[], []], target);
  }

  function historyChart() {
    return new uPlot({
      width: width("chart-history"), height: 260, legend: {live: true},
      series: [{}, {label: "avg", stroke: "#2f6fb0", width: 2, points: {show: false}},
               {label: "min", stroke: "#8fb3d9", width: 1, points: {show: false}},
               {label: "max", stroke: "#8fb3d9", width: 1, points: {show: false}}],
      bands: [{series: [3, 2], fill: "rgba(47, 111, 176, 0.15)"}],
      axes: [{}, {size: 60}], scales: {x: {time: true}},
    }, [[], [], [], []], $("chart-history"));
  }

  window.addEventListener("resize", () => {
    for (const [id, chart] of Object.entries(state.charts)) chart.setSize({width: width(id), height: chart.height});
  });

  // -- live numbers (every second) ------------------------------------------------------------------
  function pushPoint(p) {
    const last = state.live[0][state.live[0].length - 1];
    if (last !== undefined && p.t <= last) return;
    const r = p.rates || {}, lat = p.latency || {};
    const ms = (key, q) => (lat[key] && lat[key][q] !== null && lat[key][q] !== undefined) ? lat[key][q] * 1000 : null;
    const values = [p.t, r.mqtt_received || 0, r.kafka_consumed || 0, r["written:postgres"] || 0, r["written:redis"] || 0, r.dead_lettered || 0];
    values.forEach((v, i) => state.live[i].push(v));
    [p.t, ms("e2e:postgres", "p50"), ms("e2e:postgres", "p95"), ms("e2e:redis", "p50"), ms("e2e:redis", "p95")]
      .forEach((v, i) => state.latency[i].push(v));
    while (state.live[0].length > HISTORY_S) state.live.forEach((a) => a.shift());
    while (state.latency[0].length > HISTORY_S) state.latency.forEach((a) => a.shift());
  }

  function renderPipeline(body) {
    const r = body.throughput || {};
    const p95 = body.latency && body.latency["e2e:postgres"] ? body.latency["e2e:postgres"].p95 : null;
    $("stat-rate").textContent = fmtNum(r.mqtt_received || 0);
    $("stat-pg").textContent = fmtNum(r["written:postgres"] || 0);
    $("stat-redis").textContent = fmtNum(r["written:redis"] || 0);
    $("stat-latency").textContent = p95 === null || p95 === undefined ? "–" : fmtNum(p95 * 1000, 0) + " ms";
    $("stat-lag").textContent = fmtNum(body.consumer_lag.total, 0);
    $("stat-total").textContent = fmtNum(body.totals.mqtt_received, 0);
    const open = Object.values(body.alerts_open || {}).reduce((a, b) => a + b, 0);
    $("stat-alerts").textContent = String(open);
    $("stat-uptime").textContent = fmtDuration(body.uptime_s);
    $("live-state").textContent = "updated " + fmtTime(body.time);
    state.charts["chart-throughput"].setData(state.live);
    state.charts["chart-latency"].setData(state.latency);
    renderQueues(body);
    renderErrors(body);
  }

  function fillRows(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  // A sink whose store is away or refuses writes (full, read-only, ...) holds its batch: say so, with the store's words.
  function lastWrite(sink) {
    if (!sink) return el("td", null, "");
    if (!sink.blocked) return el("td", null, fmtAgo(sink.last_success_age_s));
    return el("td", {className: "bad", title: sink.blocked},
              `blocked for ${fmtNum(sink.blocked_s || 0, 0)} s (last write ${fmtAgo(sink.last_success_age_s)}): ${sink.blocked}`);
  }

  function renderQueues(body) {
    const sinks = state.sinkChecks || {};
    fillRows($("queue-table").tBodies[0], Object.entries(body.queues).map(([name, depth]) =>
      el("tr", null, el("td", null, name), el("td", null, String(depth)), lastWrite(sinks[name]))));
    const parts = Object.entries(body.consumer_lag.partitions).map(([p, lag]) => `p${p}: ${lag}`).join(", ");
    $("lag-detail").textContent = `Consumer lag ${body.consumer_lag.total} (${parts || "no partitions"}); ` +
      `${body.in_flight_batches} batch(es) in flight` + (body.consumer_lag.error ? `; lag query failed: ${body.consumer_lag.error}` : "");
    renderBroker(body.broker);
    renderGaps(body.offset_gaps);
    const dedup = body.deduplicated || {};
    $("deduplicated").textContent = `Skipped as already stored: ${fmtNum(dedup.redelivery || 0, 0)} redelivered reading(s), ` +
      `${fmtNum(dedup.conflict || 0, 0)} conflicting value(s) for a stored sensor, metric and timestamp (the first value kept)`;
  }

  // The broker's own drop counter: messages lost before they reached the pipeline (README, "Delivery guarantees").
  // Mosquitto republishes it only when it changes; until it arrives, its moving average of drops stands in.
  function renderBroker(b) {
    const p = $("broker-drops");
    if (!b) { p.textContent = ""; return; }
    const grew = b.last_growth_at !== null && b.last_growth_at !== undefined;
    const rate = b.recent_rate_per_min ? `; recently ${fmtNum(b.recent_rate_per_min, 2)}/min ` +
      `(the broker's ${fmtNum(b.rate_window_s / 60, 0)}-minute average, about ${fmtNum(b.recent_estimate, 0)} message(s))` : "";
    const since = `${fmtNum(b.seen_since_start, 0)} since this daemon started` + (b.estimated ? " (estimated)" : "") +
      (grew ? ` (last at ${fmtTime(b.last_growth_at)}; see max_queued_messages)` : "");
    p.className = grew ? "bad" : "muted";
    if (b.last_value_at === null || b.last_value_at === undefined) {
      p.textContent = `MQTT broker drops: nothing received yet on ${[b.rate_topic, ...b.topics].filter(Boolean).join(", ")}`;
    } else if (!b.counter_received) {
      p.textContent = `MQTT broker drop counter not received (the broker republishes it only when it changes)${rate}; ${since}`;
    } else {
      p.textContent = `MQTT broker dropped ${fmtNum(b.dropped_total, 0)} message(s) since it started${rate}; ${since}`;
    }
  }

  // Holes in a Kafka partition's offsets: fetched again, or given up (commits held at the hole; README).
  function renderGaps(g) {
    const p = $("offset-gaps");
    const ev = (g && g.events) || {};
    const held = (g && g.held) || [];
    p.className = held.length ? "bad" : "muted";
    p.textContent = !ev.detected && !ev.allowed ? "" : `Kafka offset gaps: ${fmtNum(ev.detected || 0, 0)} detected, ` +
      `${fmtNum(ev.refetched || 0, 0)} fetched again, ${fmtNum(ev.given_up || 0, 0)} given up, ${fmtNum(ev.allowed || 0, 0)} allowed` +
      held.map((h) => `; partition ${h.partition}: offsets ${h.first}-${h.last} (${h.missing}) missing, commits held at ${h.first}`).join("");
  }

  function renderErrors(body) {
    const reasons = Object.entries(body.dead_letters).sort((a, b) => b[1] - a[1]);
    fillRows($("dead-letter-table").tBodies[0], reasons.map(([reason, n]) =>
      el("tr", null, el("td", {className: "mono"}, reason), el("td", null, fmtNum(n, 0)))));
    $("dead-letter-empty").classList.toggle("hidden", reasons.length > 0);
    const errors = body.recent_errors || [];
    fillRows($("recent-errors").tBodies[0], errors.map((e) =>
      el("tr", {title: e.error},
         el("td", {className: "nowrap"}, fmtTime(e.time)), el("td", {className: "opt"}, e.stage), el("td", {className: "mono"}, e.reason),
         el("td", {className: "errtext"}, el("div", null, e.error),
            e.sample ? el("div", {className: "sample"}, "payload: " + e.sample) : null))));
    $("recent-errors-empty").classList.toggle("hidden", errors.length > 0);
  }

  async function pollPipeline(first) {
    try {
      const res = await getJSON(`/api/pipeline?errors=15&history=${first ? HISTORY_S : 0}`);
      if (res.ok) {
        (first ? res.body.history : [{t: res.body.time, rates: res.body.throughput, latency: res.body.latency}]).forEach(pushPoint);
        renderPipeline(res.body);
      } else {
        $("live-state").textContent = `API answered ${res.status}`;
      }
    } catch (err) {
      $("live-state").textContent = "dashboard unreachable";
    }
    setTimeout(() => pollPipeline(false), 1000);
  }

  // -- mappings (every 5 s): what each configured mapping took, and its last refused sample ---------------
  function mappingRow(m) {
    const r = m.last_refused;
    const refused = r ? el("td", {className: "errtext", title: r.error},
                           el("div", null, el("span", {className: "mono"}, r.reason), ` ${fmtTime(r.at)} `, el("span", {className: "mono"}, r.topic)),
                           el("div", null, r.error), el("div", {className: "sample"}, "payload: " + r.payload))
                      : el("td", {className: "muted"}, "none");
    return el("tr", {dataset: {mapping: m.name}},
              el("td", {className: "mono"}, m.name), el("td", {className: "opt mono"}, `${m.topic} (${m.encoding})`),
              el("td", null, fmtNum(m.rate_per_s, 2)), el("td", null, fmtNum(m.messages, 0)),
              el("td", null, fmtNum(m.readings_per_message, 2)), el("td", null, fmtNum(m.text_skipped, 0)),
              el("td", null, fmtNum(m.ignored, 0)), el("td", {className: m.refused || m.readings_refused ? "bad" : "", title: "messages / readings refused"},
                 `${fmtNum(m.refused, 0)} / ${fmtNum(m.readings_refused || 0, 0)}`), refused);
  }

  async function pollMappings() {
    try {
      const res = await getJSON("/api/mappings");
      if (res.ok && res.body) {
        const items = res.body.mappings || [];
        $("mappings").classList.toggle("hidden", items.length === 0);
        fillRows($("mapping-table").tBodies[0], items.map(mappingRow));
      }
    } catch (err) { /* the pipeline poll reports an unreachable dashboard */ }
    setTimeout(pollMappings, 5000);
  }

  // -- health (every 2 s) ----------------------------------------------------------------------------
  async function pollReady() {
    try {
      const res = await getJSON("/ready");
      if (res.body && res.body.checks) {
        const badge = $("ready-badge");
        badge.textContent = res.body.ready ? "ready" : "not ready";
        badge.className = "badge " + (res.body.ready ? "ok" : "bad");
        state.sinkChecks = res.body.checks.sinks ? res.body.checks.sinks.sinks : {};
        fillRows($("health-checks"), Object.entries(res.body.checks).map(([name, check]) =>
          el("li", {className: check.ok ? "ok" : "bad", dataset: {check: name}},
             el("span", {className: "dot", title: check.ok ? "ok" : "failing"}), el("span", {className: "name"}, name.replace(/_/g, " ")),
             el("span", {className: "detail"}, check.detail || ""))));
      }
    } catch (err) { /* the pipeline poll reports an unreachable dashboard */ }
    setTimeout(pollReady, 2000);
  }

  // -- sensors (latest every 2 s, small trends every 16 s) ----------------------------------------
  function latestChips(metrics) {
    return el("div", {className: "chips"}, ...Object.entries(metrics).map(([m, v]) => el("span", {className: "chip"}, `${m} ${fmtNum(v.value, 2)}`)));
  }

  function sensorRow(s) {
    const spark = el("div", {className: "spark"});
    const row = el("tr", {dataset: {sensorId: s.sensor_id}},
      el("td", null, el("button", {type: "button", className: "sensor-link mono"}, s.sensor_id)),
      el("td", {className: "opt"}, s.type || ""), el("td", {className: "opt"}, s.location || ""), el("td", {className: "latest"}),
      el("td", {className: "nowrap updated opt"}), el("td", null, spark));
    row.addEventListener("click", () => openSensor(s.sensor_id));
    return {row, spark, chart: null};
  }

  function renderSensors(body) {
    const tbody = $("sensor-table").tBodies[0];
    const seen = new Set();
    const metrics = new Set();
    const rows = body.sensors.map((s) => {
      seen.add(s.sensor_id);
      Object.keys(s.metrics).forEach((m) => metrics.add(m));
      let entry = state.sensors.get(s.sensor_id);
      if (!entry) { entry = sensorRow(s); state.sensors.set(s.sensor_id, entry); }
      entry.row.querySelector(".latest").replaceChildren(latestChips(s.metrics));
      entry.row.querySelector(".updated").textContent = s.updated_at ? fmtAgo(Date.now() / 1000 - s.updated_at) : "";
      entry.row.classList.toggle("selected", s.sensor_id === state.selected);
      return entry.row;
    });
    for (const id of [...state.sensors.keys()]) if (!seen.has(id)) state.sensors.delete(id);
    fillRows(tbody, rows);
    $("sensor-count").textContent = String(body.total);
    $("sensor-empty").classList.toggle("hidden", body.total > 0);
    updateSparkOptions(metrics);
    if (body.sparklines) {
      for (const [id, entry] of state.sensors) {
        const series = (body.sparklines[id] || {})[state.sparkMetric] || [[], []];
        if (!entry.chart) entry.chart = sparkline(entry.spark);
        entry.chart.setData(series);
      }
    }
  }

  function updateSparkOptions(metrics) {
    const select = $("spark-metric");
    const have = [...select.options].map((o) => o.value);
    const want = [...metrics].sort();
    if (want.join() === have.join()) return;
    select.replaceChildren(...want.map((m) => el("option", {value: m}, m)));
    if (!want.includes(state.sparkMetric)) state.sparkMetric = want.includes("temperature") ? "temperature" : (want[0] || "");
    select.value = state.sparkMetric;
  }

  async function pollSensors(loop = true) {
    const withSpark = state.sparkTick++ % 8 === 0;
    const q = encodeURIComponent($("sensor-filter").value.trim());
    try {
      const res = await getJSON(`/api/sensors?limit=200&q=${q}${withSpark ? "&spark=30" : ""}`);
      if (res.ok) renderSensors(res.body);
    } catch (err) { /* next round */ }
    if (loop) setTimeout(pollSensors, 2000);
  }

  // -- one sensor's history ---------------------------------------------------------------------------
  async function openSensor(id) {
    state.selected = id;
    $("sensor-detail").classList.remove("hidden");
    $("detail-id").textContent = id;
    for (const entry of state.sensors.values()) entry.row.classList.toggle("selected", entry.row.dataset.sensorId === id);
    const res = await getJSON(`/api/sensors/${encodeURIComponent(id)}`);
    if (!res.ok) { $("detail-info").textContent = res.body ? res.body.error : `HTTP ${res.status}`; return; }
    const s = res.body;
    $("detail-info").textContent = [s.type, s.location, s.registered_at ? "registered " + fmtTime(s.registered_at) : null,
      `${s.open_alerts.length} open alert(s)`].filter(Boolean).join(" · ");
    const select = $("history-metric");
    const metrics = Object.keys(s.metrics);
    const keep = metrics.includes(select.value) ? select.value : (metrics.includes(state.sparkMetric) ? state.sparkMetric : metrics[0]);
    select.replaceChildren(...metrics.map((m) => el("option", {value: m}, m)));
    if (keep) select.value = keep;
    if (!state.charts["chart-history"]) state.charts["chart-history"] = historyChart();
    loadHistory();
    $("sensor-detail").scrollIntoView({behavior: "smooth", block: "nearest"});
  }

  async function loadHistory() {
    const id = state.selected, metric = $("history-metric").value;
    if (!id || !metric) return;
    const range = Number($("history-range").value);
    if (range / PERIOD_S[state.period] > MAX_POINTS) {  // the API refuses more points: take a coarser period
      state.period = range / PERIOD_S["5m"] <= MAX_POINTS ? "5m" : "1h";
      for (const b of $("period-select").querySelectorAll("button")) b.classList.toggle("active", b.dataset.period === state.period);
    }
    const now = Date.now() / 1000;
    const url = `/api/sensors/${encodeURIComponent(id)}/trend?metric=${encodeURIComponent(metric)}&period=${state.period}` +
                `&from=${(now - range).toFixed(0)}&to=${(now + 60).toFixed(0)}`;
    const res = await getJSON(url);
    const note = $("history-source");
    if (!res.ok) { note.textContent = res.body ? res.body.error : `HTTP ${res.status}`; return; }
    const t = res.body;
    state.charts["chart-history"].setData([t.t, t.avg, t.min, t.max]);
    note.textContent = t.source === "none" ? "No readings in this range." :
      `${t.t.length} point(s) of ${t.period}, from ${t.source === "aggregations" ? "aggregations" : "raw measurements (no aggregations yet)"}; band: min to max.`;
    note.dataset.points = String(t.t.length);
  }

  // -- alerts (every 3 s) ---------------------------------------------------------------------------
  // What an alert's row says beside its message: acknowledged by whom, snoozed until when, flapping, maintenance.
  function stateChips(a) {
    const chips = [];
    if (a.acknowledged) chips.push(el("span", {className: "state-chip acknowledged"}, `acknowledged by ${a.acknowledged_by}`));
    if (a.snoozed_until) chips.push(el("span", {className: "state-chip snoozed"}, `snoozed until ${fmtTime(a.snoozed_until)}`));
    if (a.flapping) chips.push(el("span", {className: "state-chip flapping"}, "flapping"));
    if (a.maintenance) chips.push(el("span", {className: "state-chip maintenance"}, "maintenance"));
    return chips;
  }

  function actionButtons(a) {
    const writable = document.body.dataset.tokenConfigured === "yes";
    const data = {alertId: String(a.id), sensorId: a.sensor_id || "", metric: a.metric || "", type: a.type || ""};
    const button = (cls, text, title) => el("button", {type: "button", className: cls, disabled: !writable, dataset: data,
                                                      title: writable ? title : "DASHBOARD_TOKEN is not set"}, text);
    return el("td", {className: "actions-cell"},
      a.acknowledged ? null : button("ack", "Ack", "Acknowledge: someone is on it, no more notifications for it"), " ",
      button("snooze", "Snooze", "No notifications for a while: this alert, its sensor or its rule"), " ",
      button("resolve", "Resolve", "Resolve this alert"));
  }

  function alertRow(a, resolvable) {
    const kind = a.metric ? `${a.type} · ${a.metric}` : a.type;
    const last = resolvable ? actionButtons(a) : el("td", {className: "nowrap"}, fmtTime(a.resolved_at));
    return el("tr", {dataset: {alertId: String(a.id)}},
      el("td", null, el("span", {className: `badge sev-${String(a.severity).toLowerCase()}`}, a.severity)),
      el("td", {className: "mono"}, a.sensor_id || ""), el("td", {className: "opt"}, kind),
      el("td", {className: "message"}, a.message, ...stateChips(a)),
      el("td", {className: "nowrap opt"}, fmtTime(a.timestamp)), last);
  }

  function snoozeRow(s) {
    const scope = s.alert_id ? `alert ${s.alert_id}` :
      [s.sensor_id ? `sensor ${s.sensor_id}` : null, s.type ? `type ${s.type}` : null, s.metric ? `metric ${s.metric}` : null]
        .filter(Boolean).join(", ");
    return el("tr", {dataset: {snoozeId: String(s.id)}},
      el("td", null, scope), el("td", {className: "nowrap"}, fmtTime(s.until)),
      el("td", null, s.created_by), el("td", {className: "message opt"}, s.note),
      el("td", null, el("button", {type: "button", className: "unsnooze", disabled: document.body.dataset.tokenConfigured !== "yes",
                                   dataset: {snoozeId: String(s.id)}}, "Unsnooze")));
  }

  async function pollAlerts(loop = true) {
    const filter = $("alert-state").value;
    try {
      const [open, resolved, snoozes] = await Promise.all([
        getJSON(filter ? `/api/alerts?state=${filter}&limit=100` : "/api/alerts?status=open&limit=100"),
        getJSON("/api/alerts?status=resolved&limit=20"), getJSON("/api/snoozes?limit=100")]);
      if (open.ok) {
        fillRows($("open-alerts-table").tBodies[0], open.body.alerts.map((a) => alertRow(a, true)));
        $("open-count").textContent = String(open.body.count);
        $("open-alerts-empty").classList.toggle("hidden", open.body.count > 0);
      }
      if (resolved.ok) fillRows($("resolved-alerts-table").tBodies[0], resolved.body.alerts.map((a) => alertRow(a, false)));
      if (snoozes.ok) {
        fillRows($("snoozes-table").tBodies[0], snoozes.body.snoozes.map(snoozeRow));
        $("snoozes").classList.toggle("hidden", snoozes.body.count === 0);
      }
    } catch (err) { /* next round */ }
    if (loop) setTimeout(pollAlerts, 3000);
  }

  document.addEventListener("alerts-changed", () => pollAlerts(false));

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("#open-alerts-table button.resolve");
    if (!button) return;
    button.disabled = true;
    const result = await Dash.resolveAlert(button.dataset.alertId);
    Dash.showMessage(result.message, !result.ok);
    if (result.ok) button.closest("tr").remove();
    else button.disabled = false;
    pollAlerts(false);
  });

  // -- start ------------------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    state.charts["chart-throughput"] = lineChart("chart-throughput", ["received (msg)", "consumed (msg)", "PostgreSQL (readings)", "Redis (readings)", "dead letters"],
                                                 ["#2f6fb0", "#7a5cc4", "#1f8a4c", "#d0702c", "#c62828"], "msg/s");
    state.charts["chart-latency"] = lineChart("chart-latency", ["p50 PostgreSQL", "p95 PostgreSQL", "p50 Redis", "p95 Redis"],
                                              ["#1f8a4c", "#0d5b30", "#d0702c", "#8a4210"], "ms");
    $("sensor-filter").addEventListener("input", () => { state.sparkTick = 0; pollSensors(false); });
    $("spark-metric").addEventListener("change", (e) => { state.sparkMetric = e.target.value; state.sparkTick = 0; pollSensors(false); });
    $("history-metric").addEventListener("change", loadHistory);
    $("history-range").addEventListener("change", loadHistory);
    $("period-select").addEventListener("click", (e) => {
      const button = e.target.closest("button[data-period]");
      if (!button) return;
      state.period = button.dataset.period;
      for (const b of $("period-select").querySelectorAll("button")) b.classList.toggle("active", b === button);
      loadHistory();
    });
    $("alert-state").addEventListener("change", () => pollAlerts(false));
    $("detail-close").addEventListener("click", () => { state.selected = null; $("sensor-detail").classList.add("hidden"); });
    setInterval(() => { if (state.selected) loadHistory(); }, 10000);
    pollPipeline(true);
    pollReady();
    pollMappings();
    pollSensors();
    pollAlerts();
  });
})();
