// Strowger operations dashboard: polls /dashboard/api/overview every 2 s and draws it.
// Plain JS, no build step. Data is only ever inserted as text (never as HTML).
"use strict";
(() => {
  const POLL_MS = 2000;
  const HISTORY = 150; // points kept per chart: 5 minutes at one poll every 2 s
  const KEY = "strowger.apiKey";
  const $ = (id) => document.getElementById(id);

  // --- credentials ---------------------------------------------------------------------------
  // ?key=... is taken once, then removed from the address bar (and so from history and bookmarks).
  const params = new URLSearchParams(location.search);
  if (params.has("key")) {
    sessionStorage.setItem(KEY, params.get("key"));
    params.delete("key");
    history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : ""));
  }
  const apiKey = () => sessionStorage.getItem(KEY);

  class HttpError extends Error {
    constructor(status, body) {
      super((body && (body.message || body.reason || body.detail)) || "HTTP " + status);
      this.status = status;
    }
  }

  async function api(path, options = {}) {
    const headers = { "X-API-Key": apiKey() || "", Accept: "application/json" };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method: options.method || "GET",
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      credentials: "omit",
      cache: "no-store",
    });
    const text = await response.text();
    const body = text ? JSON.parse(text) : null;
    if (response.status === 401) askForKey("The key was refused.");
    if (!response.ok) throw new HttpError(response.status, body);
    return body;
  }

  function askForKey(message) {
    sessionStorage.removeItem(KEY);
    $("login-error").textContent = message || "";
    if (!$("login").open) $("login").showModal();
    $("login-key").focus();
  }

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("login-key").value.trim());
    $("login-key").value = "";
    $("login").close();
    poll();
  });
  $("logout").addEventListener("click", () => askForKey(""));

  // --- tiny DOM helpers ------------------------------------------------------------------------
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (name === "on") for (const [type, fn] of Object.entries(value)) node.addEventListener(type, fn);
      else if (name === "class") node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }
  const td = (text, cls) => el("td", cls ? { class: cls } : {}, text ?? "");
  const fill = (parent, nodes) => parent.replaceChildren(...nodes);
  const seconds = (s) => (s == null ? "–" : s < 1 ? (s * 1000).toFixed(0) + " ms" : s < 120 ? s.toFixed(1) + " s" : (s / 60).toFixed(1) + " min");
  const rate = (r) => (r == null ? "–" : r >= 10 ? r.toFixed(0) : r.toFixed(2));
  const short = (id) => (id && id.length > 13 ? id.slice(0, 8) + "…" : id);

  function showDetail(title, ...content) {
    $("detail-title").textContent = title;
    fill($("detail-body"), content);
    if (!$("detail").open) $("detail").showModal();
  }

  async function act(label, request, confirmText) {
    if (confirmText && !confirm(confirmText)) return;
    try {
      const result = await request();
      flash(label + ": done", true);
      return result;
    } catch (error) {
      flash(label + ": " + error.message, false);
    } finally {
      poll();
    }
  }

  let flashUntil = 0; // an action's outcome stays readable for a few polls
  function flash(text, ok) {
    flashUntil = Date.now() + 5000;
    const status = $("status");
    status.textContent = text;
    status.className = "status " + (ok ? "ok" : "bad");
  }

  // --- flow map (SVG: producers → topics → consumers) -------------------------------------------
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function drawFlow(flow) {
    const root = $("flow");
    if (flow.error) return fill(root, [svg("text", { x: 10, y: 20, class: "rate" }, flow.error)]);
    $("flow-window").textContent = "events/s over " + flow.windowSeconds + " s";
    const width = root.clientWidth || 600;
    const height = root.clientHeight || 300;
    const columns = { producer: [], topic: [], consumer: [] };
    for (const node of flow.nodes) columns[node.role].push(node);
    const x = { producer: 6, topic: width * 0.36, consumer: width * 0.70 };
    const boxWidth = { producer: width * 0.24, topic: width * 0.26, consumer: width * 0.29 };
    const position = {};
    const children = [];
    for (const [role, nodes] of Object.entries(columns)) {
      children.push(svg("text", { x: x[role], y: 10, class: "column" }, role === "producer" ? "producers" : role + "s"));
      const step = (height - 20) / Math.max(nodes.length, 1);
      nodes.forEach((node, index) => {
        const y = 16 + step * index + Math.max(step / 2 - 9, 0);
        position[node.id] = { x: x[role], y, w: boxWidth[role] };
      });
    }
    // Rates are labelled on live edges only, busiest first, and a label that would cover another is
    // left out (its edge keeps the rate as a tooltip): many edges meet at one topic.
    const labels = [], placed = [];
    for (const edge of flow.edges) {
      const a = position[edge.source], b = position[edge.target];
      if (!a || !b) continue;
      const x1 = a.x + a.w, y1 = a.y + 9, x2 = b.x, y2 = b.y + 9, mid = (x1 + x2) / 2;
      const live = edge.rate > 0;
      const strokeWidth = live ? Math.min(1.5 + Math.log10(1 + edge.rate) * 2.5, 7) : 1;
      const path = svg("path", {
        d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`,
        class: "edge" + (live ? " live" : ""), "stroke-width": strokeWidth,
        "data-source": edge.source, "data-target": edge.target,
      });
      const shown = edge.rate == null ? "rate not attributable" : rate(edge.rate) + " events/s";
      path.append(svg("title", {}, `${edge.source.split(":")[1]} → ${edge.target.split(":")[1]}: ${shown}`));
      children.push(path);
      if (live) labels.push({ rate: edge.rate, x: mid, y: (y1 + y2) / 2 });
    }
    labels.sort((p, q) => q.rate - p.rate);
    for (const label of labels) {
      const text = rate(label.rate) + "/s", w = text.length * 5.2, h = 10;
      const box = { x: label.x - w / 2, y: label.y - h, w, h };
      if (placed.some((o) => box.x < o.x + o.w && o.x < box.x + box.w && box.y < o.y + o.h && o.y < box.y + box.h)) continue;
      placed.push(box);
      children.push(svg("text", { x: box.x, y: label.y - 2, class: "rate" }, text));
    }
    for (const node of flow.nodes) {
      const p = position[node.id];
      const group = svg("g", { class: "node " + node.role, "data-node": node.id });
      group.append(svg("rect", { x: p.x, y: p.y, width: p.w, height: 18 }));
      const label = node.name.length * 5.6 > p.w - 8 ? node.name.slice(0, Math.floor((p.w - 8) / 5.6) - 1) + "…" : node.name;
      group.append(svg("text", { x: p.x + 4, y: p.y + 12.5 }, label));
      group.append(svg("title", {}, node.name));
      children.push(group);
    }
    if (!flow.nodes.length) children.push(svg("text", { x: 10, y: 40, class: "rate" }, "no traffic seen yet"));
    fill(root, children);
  }

  // --- live charts (uPlot) -----------------------------------------------------------------------
  const series = { t: [], events: [], lag: [], dead: [], inflight: [] };
  const chartSpecs = [
    ["events", "events/s (all edges)", "#4fa3e0"],
    ["lag", "consumer lag (messages)", "#e0a84f"],
    ["dead", "dead letters", "#e05f5f"],
    ["inflight", "sagas in flight", "#3fb27f"],
  ];
  const charts = {};

  function makeCharts() {
    const container = $("charts");
    const width = Math.max(Math.floor(container.clientWidth / 2) - 6, 140);
    const height = Math.max(Math.floor(($("charts-panel").clientHeight - 40) / 2) - 26, 70);
    for (const [name, title, color] of chartSpecs) {
      const target = el("div", { class: "chart", "data-chart": name }, el("h4", {}, title));
      container.append(target);
      charts[name] = new uPlot({
        width, height, legend: { show: false }, cursor: { show: false },
        scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max, 1) * 1.15] } },
        axes: [
          { stroke: "#7d8a97", grid: { stroke: "#222b34" }, ticks: { stroke: "#222b34" }, size: 22, font: "9px sans-serif" },
          { stroke: "#7d8a97", grid: { stroke: "#222b34" }, ticks: { stroke: "#222b34" }, size: 34, font: "9px sans-serif" },
        ],
        series: [{}, { stroke: color, fill: color + "33", width: 1.5 }],
      }, [[], []], target);
    }
  }

  function pushPoint(snapshot) {
    const sum = (values) => values.reduce((a, b) => a + (b || 0), 0);
    const flow = snapshot.flow.edges ? snapshot.flow.edges : [];
    const consumed = flow.filter((e) => e.source.startsWith("topic:")).map((e) => e.rate);
    const published = flow.filter((e) => !e.source.startsWith("topic:")).map((e) => e.rate);
    const lag = Array.isArray(snapshot.lag) ? sum(snapshot.lag.map((l) => l.lag)) : null;
    const dead = snapshot.deadLetters.counts ? snapshot.deadLetters.counts.dead || 0 : null;
    const inflight = snapshot.sagas.inFlight ? sum(snapshot.sagas.inFlight.map((s) => s.count)) : null;
    series.t.push(Date.now() / 1000);
    series.events.push(Math.max(sum(published), sum(consumed)));
    series.lag.push(lag);
    series.dead.push(dead);
    series.inflight.push(inflight);
    for (const values of Object.values(series)) if (values.length > HISTORY) values.shift();
    for (const [name] of chartSpecs) charts[name].setData([series.t, series[name]]);
  }

  // --- sagas ---------------------------------------------------------------------------------------
  const SAGA_ACTIONS = ["retry", "skip", "force-complete", "compensate", "abort"];

  function sagaButtons(sagaId, actions) {
    return actions.map((action) => el("button", {
      class: action === "abort" || action === "force-complete" ? "danger" : "",
      "data-action": action, title: action + " saga " + sagaId,
      on: { click: () => sagaAction(sagaId, action) },
    }, action));
  }

  function sagaAction(sagaId, action) {
    const reason = prompt(`Why ${action} saga ${sagaId}? (recorded in the saga audit)`);
    if (!reason || !reason.trim()) return;
    act(action + " " + short(sagaId), () =>
      api(`/sagas/${encodeURIComponent(sagaId)}/${action}`, { method: "POST", body: { reason: reason.trim() } }));
  }

  function drawSagas(sagas) {
    if (sagas.error) return fill($("saga-types"), [el("tr", {}, td(sagas.error, "error"))]);
    $("saga-summary").textContent = `· ${sumCounts(sagas.inFlight)} in flight · ${sagas.stuck} stuck`;
    // One row per (saga type, order type) completed in the last 24 h; a type with none yet shows dashes.
    const timed = new Set((sagas.durations || []).map((d) => d.sagaType));
    const rows = [...(sagas.durations || []), ...sagas.types.filter((t) => !timed.has(t.sagaType))];
    fill($("saga-types"), rows.length ? rows.map((d) => el("tr", { "data-saga-type": d.sagaType },
      td(d.sagaType), td(d.orderType || "–"), td(d.completed24h, "num"),
      ...["p50", "p95", "p99"].map((p) => td(d.completed24h ? seconds(d[p]) : "–", "num")))) :
      [el("tr", {}, el("td", { colspan: 6, class: "empty" }, "no saga has run yet"))]);
    fill($("compensation"), sagas.types.map((t) => {
      const c = t.compensation;
      const hot = c.rate > 0.05;
      return el("div", { class: "compensation" + (hot ? " hot" : ""), "data-saga-type": t.sagaType },
        el("div", {}, el("b", {}, t.sagaType), ` compensated ${c.compensated} of ${c.finished} ended in ${Math.round(c.windowSeconds / 60)} min · `,
          el("b", { class: hot ? "error" : "" }, (c.rate * 100).toFixed(1) + " %")),
        ...c.topReasons.map((r) => el("div", { class: "reason", title: r.example },
          el("span", { class: "num" }, r.count + "×"), " ", el("span", { class: "kind" }, r.reason),
          r.example !== r.reason ? " · " + r.example.slice(r.reason.length).replace(/^:\s*/, "") : "")));
    }));
    fill($("open-sagas"), sagas.open.length ? sagas.open.map((s) => el("tr", { "data-saga": s.sagaId },
      el("td", { title: s.sagaId }, short(s.sagaId)), el("td", { title: s.sagaType }, s.sagaType), td(s.status),
      el("td", { title: "step status: " + s.stepStatus }, s.step), td(seconds(s.ageSeconds), "num"),
      el("td", { class: "actions" }, sagaButtons(s.sagaId, s.status === "running" ? ["retry", "skip", "compensate"] : [])))) :
      [el("tr", {}, el("td", { colspan: 6, class: "empty" }, "none"))]);
    const count = $("quarantine-count");
    count.textContent = sagas.quarantined.length;
    count.classList.toggle("hot", sagas.quarantined.length > 0);
    fill($("quarantine"), sagas.quarantined.length ? sagas.quarantined.map((q) => el("div", { class: "quarantined", "data-saga": q.sagaId },
      el("div", {}, el("b", {}, q.sagaType), " ", el("span", { title: q.sagaId }, short(q.sagaId)), " · stuck on ", el("b", {}, q.stuckStep)),
      el("div", { class: "muted" }, q.reason),
      q.stuckErrors.length ? el("div", { class: "error" }, q.stuckErrors[q.stuckErrors.length - 1]) : null,
      el("div", { class: "muted" }, "done: " + (q.succeededSteps.join(", ") || "nothing") + " · undone: " + (q.compensatedSteps.join(", ") || "nothing")),
      el("div", { class: "actions" }, sagaButtons(q.sagaId, SAGA_ACTIONS)))) :
      [el("div", { class: "empty" }, "nothing quarantined")]);
  }

  const sumCounts = (rows) => (rows || []).reduce((a, r) => a + r.count, 0);

  // --- consumers ---------------------------------------------------------------------------------
  function drawLag(lag, flow) {
    if (lag.error) return fill($("lag"), [el("tr", {}, td(lag.error, "error"))]);
    const rates = (flow && flow.consumerRates) || {};
    fill($("lag"), lag.length ? lag.map((c) => el("tr", { "data-consumer": c.consumer },
      el("td", { title: c.topics.join(", ") }, c.consumer),
      c.error ? el("td", { class: "error", title: c.error }, "?") : td(c.lag, "num"),
      td(rate(rates[c.consumer] || 0), "num"), td(c.dead, "num"))) :
      [el("tr", {}, el("td", { colspan: 4, class: "empty" }, "no consumer runs in this process"))]);
  }

  // --- outbox backlog ----------------------------------------------------------------------------
  function drawOutbox(outbox) {
    if (!outbox || outbox.error) return fill($("outbox"), [el("tr", {}, td(outbox ? outbox.error : "", "error"))]);
    const age = (seconds) => (seconds === null ? "-" : seconds + " s");
    $("outbox-summary").textContent = `${outbox.backlog} waiting`;
    fill($("outbox"), outbox.components.map((c) => el("tr", { "data-component": c.component },
      td(c.component), td(c.backlog, "num"), td(age(c.oldestAgeSeconds), "num"))));
  }

  // --- dead letters ------------------------------------------------------------------------------
  function drawDeadLetters(dlq) {
    if (dlq.error) return fill($("dlq"), [el("tr", {}, td(dlq.error, "error"))]);
    const dead = dlq.counts.dead || 0;
    $("dlq-count").textContent = dead;
    $("dlq-count").classList.toggle("hot", dead > 0);
    fill($("dlq"), dlq.letters.length ? dlq.letters.map((letter) => el("tr", { "data-letter": letter.id },
      td(letter.id, "num"), td(letter.consumer), td(letter.eventType),
      el("td", { class: "wrap", title: letter.errorMessage || "" }, letter.errorType || ""),
      el("td", { class: "actions" },
        el("button", { "data-action": "inspect", on: { click: () => inspectLetter(letter.id) } }, "inspect"),
        el("button", { "data-action": "replay", on: { click: () => replayLetter(letter.id) } }, "replay"),
        el("button", { class: "danger", "data-action": "discard", on: { click: () => discardLetter(letter.id) } }, "discard")))) :
      [el("tr", {}, el("td", { colspan: 5, class: "empty" }, "no dead letters"))]);
  }

  const replayLetter = (id) => act("replay #" + id, () => api("/dlq/replay", { method: "POST", body: { ids: [id] } }));
  const discardLetter = (id) => act("discard #" + id, () => api(`/dlq/${id}/discard`, { method: "POST" }),
    `Discard dead letter #${id} for good? The events of its entity waiting behind it will then be applied.`);

  async function inspectLetter(id) {
    try {
      const letter = await api(`/dlq/${id}`);
      showDetail(`Dead letter #${id} · ${letter.eventType}`,
        el("p", {}, `${letter.consumer} · ${letter.topic} · entity ${letter.entityKey ?? "–"} · ${letter.waitingBehind} waiting behind`),
        el("p", { class: "error" }, `${letter.errorType}: ${letter.errorMessage}`),
        el("div", { class: "actions" },
          el("button", { on: { click: () => { $("detail").close(); replayLetter(id); } } }, "replay"),
          el("button", { class: "danger", on: { click: () => { $("detail").close(); discardLetter(id); } } }, "discard")),
        el("h3", {}, "headers"), el("pre", {}, JSON.stringify(letter.headers, null, 2)),
        el("h3", {}, "body"), el("pre", {}, typeof letter.body === "string" ? letter.body : JSON.stringify(letter.body, null, 2)),
        el("h3", {}, "traceback"), el("pre", {}, letter.traceback || ""));
    } catch (error) {
      flash("inspect #" + id + ": " + error.message, false);
    }
  }

  // --- alerts --------------------------------------------------------------------------------------
  function drawAlerts(alerts) {
    $("alert-count").textContent = alerts.length;
    $("alert-count").classList.toggle("hot", alerts.length > 0);
    fill($("alerts"), alerts.length ? alerts.map((a) => el("li", { class: a.severity },
      el("b", {}, a.name), " ", el("span", { class: "muted" }, a.severity), el("div", {}, a.summary))) :
      [el("li", { class: "none" }, "all clear")]);
  }

  // --- order trace ---------------------------------------------------------------------------------
  $("trace-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = $("trace-id").value.trim();
    if (!id) return;
    try {
      const trace = await api("/trace/" + encodeURIComponent(id));
      const rows = trace.hops.map((hop) => el("tr", {},
        td(hop.at || hop.producedAt), td(hop.eventType), td(hop.producer), td(hop.topic), td(hop.consumer || "–"),
        td(hop.outcome), td(hop.latencyMs == null ? "–" : hop.latencyMs.toFixed(1) + " ms", "num")));
      showDetail(`Trace ${id} · ${trace.hops.length} hops`,
        el("table", { class: "compact" },
          el("thead", {}, el("tr", {}, ["time", "event", "producer", "topic", "consumer", "outcome", "latency"].map((h) => el("th", {}, h)))),
          el("tbody", {}, rows)));
    } catch (error) {
      flash("trace " + id + ": " + error.message, false);
    }
  });

  // --- polling -------------------------------------------------------------------------------------
  let timer = null;
  let inFlight = false;

  async function poll() {
    clearTimeout(timer);
    if (!apiKey()) return askForKey("");
    if (inFlight) return;
    inFlight = true;
    try {
      const snapshot = await api("/dashboard/api/overview");
      $("backend").textContent = `${snapshot.database} · ${snapshot.bus}`;
      drawFlow(snapshot.flow);
      drawSagas(snapshot.sagas);
      drawLag(snapshot.lag, snapshot.flow);
      drawDeadLetters(snapshot.deadLetters);
      drawOutbox(snapshot.outbox);
      drawAlerts(snapshot.alerts);
      pushPoint(snapshot);
      if (Date.now() > flashUntil) {
        $("status").textContent = "live · " + new Date().toLocaleTimeString();
        $("status").className = "status ok";
      }
      document.body.dataset.updated = snapshot.generatedAt;
    } catch (error) {
      if (!(error instanceof HttpError && error.status === 401)) flash(error.message, false);
    } finally {
      inFlight = false;
      if (apiKey()) timer = setTimeout(poll, POLL_MS);
    }
  }

  makeCharts();
  poll();
})();
