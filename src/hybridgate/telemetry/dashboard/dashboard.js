// hybridgate live dashboard: polls /metrics (Prometheus text) and /readyz, parses them here (with
// prometheus.js) and renders what they say. No dependencies, no build step, no request to any
// other origin.
// Every displayed number carries its raw value in data-value (tests compare it with /metrics).
"use strict";

(function () {
  const KEY_STORAGE = "hybridgate.dashboard.key";
  const WINDOW_S = 300; // latency quantiles, split, errors and burn: the last 5 minutes
  const RATE_S = 60; // request and cost rates: the last minute
  const MEMORY_OUTCOMES = new Set(["cache_hit", "cache_stale", "idempotent_replay", "memory"]);
  const SENSITIVE_FAMILY = /^hybridgate_(sensitive|privacy|redact|data_guard|governance)/;
  const TTFT_FAMILY = /(ttft|first_token)/;
  const LATENCY_FAMILY = "hybridgate_request_duration_seconds";
  const params = new URLSearchParams(location.search);
  const REFRESH_S = Math.min(60, Math.max(0.5, Number(params.get("refresh")) || 2));

  const {
    parsePrometheus, histogramQuantile, fractionAbove,
    series, total, growth, windowBuckets, histogramFamilies,
  } = window.hybridgatePrometheus;

  // ------------------------------------------------------------------ formatting

  const DASH = "—";

  function fmtSeconds(s) {
    if (!Number.isFinite(s)) return DASH;
    return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`;
  }

  function fmtUsd(v) {
    if (!Number.isFinite(v)) return DASH;
    return "$" + (v >= 100 ? v.toFixed(2) : v >= 1 ? v.toFixed(3) : v.toFixed(6));
  }

  function fmtPct(v) {
    return Number.isFinite(v) ? `${(v * 100).toFixed(1)}%` : DASH;
  }

  function fmtCount(v) {
    return Number.isFinite(v) ? String(Math.round(v)) : DASH;
  }

  function fmtRate(v, unit) {
    if (!Number.isFinite(v)) return DASH;
    return `${v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${unit}`;
  }

  // ok | warn | bad for a value against a budget (amber from 80% of it).
  function against(value, budget) {
    if (!Number.isFinite(value) || !Number.isFinite(budget)) return "none";
    return value > budget ? "bad" : value > 0.8 * budget ? "warn" : "ok";
  }

  function burnLevel(burn) {
    if (!Number.isFinite(burn)) return "none";
    return burn >= 6 ? "bad" : burn >= 1 ? "warn" : "ok";
  }

  function worst(levels) {
    for (const l of ["bad", "warn", "ok"]) if (levels.includes(l)) return l;
    return "none";
  }

  // ------------------------------------------------------------------ DOM helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === "class") node.className = v;
      else node.setAttribute(k, String(v));
    }
    for (const c of children) node.append(c instanceof Node ? c : String(c));
    return node;
  }

  // A displayed number: its text, and its raw value for machines.
  function value(metric, raw, text, level) {
    return el("span", { class: `v ${level || ""}`, "data-metric": metric, "data-value": raw }, text);
  }

  function replace(container, ...children) {
    container.replaceChildren(...children);
  }

  // ------------------------------------------------------------------ state and polling

  const state = {
    key: sessionStorage.getItem(KEY_STORAGE) || "",
    config: null,
    scrapes: [], // {t (s, monotonic), wall (ms), text, samples, types}, oldest first
    readyz: null,
    seq: 0,
    timer: null,
    lastError: "",
    lastErrorAt: 0,
  };

  function headers() {
    return state.key ? { Authorization: `Bearer ${state.key}` } : {};
  }

  async function get(path) {
    return fetch(path, { headers: headers(), cache: "no-store", credentials: "omit", redirect: "error" });
  }

  class Refused extends Error {}

  async function getJSON(path) {
    const r = await get(path);
    if (r.status === 401) throw new Refused();
    if (!r.ok && r.status !== 503) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }

  function askForKey(message) {
    clearTimeout(state.timer);
    document.getElementById("main").hidden = true;
    document.getElementById("key-form").hidden = false;
    document.getElementById("key-message").textContent = message;
    document.getElementById("key-input").focus();
  }

  async function start() {
    try {
      state.config = await getJSON("dashboard/config.json");
    } catch (err) {
      if (err instanceof Refused) {
        askForKey(
          state.key
            ? "The key was refused. Enter a client API key of this gateway."
            : "This gateway needs a client API key to read its metrics."
        );
      } else {
        failed(String(err.message || err));
        state.timer = setTimeout(start, REFRESH_S * 1000);
      }
      return;
    }
    document.getElementById("key-form").hidden = true;
    document.getElementById("main").hidden = false;
    poll();
  }

  async function poll() {
    try {
      const [metrics, readyz] = await Promise.all([
        get("metrics"),
        getJSON("readyz").catch((err) => {
          if (err instanceof Refused) throw err;
          return null; // breaker states and offline details degrade to "—"
        }),
      ]);
      if (metrics.status === 401) throw new Refused();
      if (!metrics.ok) throw new Error(`/metrics: HTTP ${metrics.status}`);
      // fetch() rejects with a TypeError when the gateway is unreachable: failed() below.
      const text = await metrics.text();
      const scrape = { t: performance.now() / 1000, wall: Date.now(), text, ...parsePrometheus(text) };
      state.scrapes.push(scrape);
      while (state.scrapes.length > 2 && scrape.t - state.scrapes[1].t >= WINDOW_S) state.scrapes.shift();
      state.readyz = readyz;
      state.seq += 1;
      state.lastError = "";
      render();
    } catch (err) {
      if (err instanceof Refused) {
        sessionStorage.removeItem(KEY_STORAGE);
        state.key = "";
        askForKey("The key was refused. Enter a client API key of this gateway.");
        return;
      }
      failed(String(err.message || err));
    }
    state.timer = setTimeout(poll, REFRESH_S * 1000);
  }

  // The gateway did not answer: nothing shown may pass for current any more.
  function failed(message) {
    state.lastError = message;
    state.lastErrorAt = Date.now();
    const scrape = document.getElementById("scrape");
    scrape.className = "scrape bad";
    scrape.textContent = `scrape failed: ${message}`;
    const newest = state.scrapes[state.scrapes.length - 1];
    document.getElementById("banner").dataset.state = "stale";
    const mode = document.getElementById("mode");
    mode.dataset.value = "";
    mode.textContent = "NO DATA";
    document.getElementById("mode-detail").textContent = newest
      ? `figures below are from ${new Date(newest.wall).toLocaleTimeString()}`
      : "";
    document.getElementById("main").classList.add("stale");
  }

  // The scrape closest to `seconds` before the newest (the first one when the page is younger).
  function baseFor(seconds) {
    const newest = state.scrapes[state.scrapes.length - 1];
    let base = state.scrapes[0];
    for (const s of state.scrapes) if (newest.t - s.t >= seconds) base = s;
    return base === newest ? null : base;
  }

  // ------------------------------------------------------------------ rendering

  function render() {
    const now = state.scrapes[state.scrapes.length - 1];
    const win = baseFor(WINDOW_S);
    const rate = baseFor(RATE_S);
    renderBanner(now);
    renderClasses(now, win, rate);
    renderDeployments(now);
    renderCost(now, rate);
    renderSensitive(now, win);
    renderResilience(now, win);
    const span = win ? now.t - win.t : 0;
    const young = state.scrapes[0] === win && span < WINDOW_S - 2 * REFRESH_S;
    document.getElementById("window-note").textContent = !win
      ? "waiting for a second scrape"
      : young
        ? `latency, split and burn since this page opened ${Math.round(span)} s ago (then the last ${WINDOW_S / 60} min)`
        : `latency, split and burn over the last ${Math.round(span)} s`;
    document.getElementById("main").classList.remove("stale");
    const scrape = document.getElementById("scrape");
    scrape.className = "scrape";
    scrape.dataset.seq = String(state.seq);
    scrape.dataset.at = String(now.wall);
    scrape.textContent = `updated ${new Date(now.wall).toLocaleTimeString()} · every ${REFRESH_S} s`;
  }

  function renderBanner(now) {
    const banner = document.getElementById("banner");
    const mode = document.getElementById("mode");
    const detail = document.getElementById("mode-detail");
    const offline = series(now, "hybridgate_offline")[0];
    const ready = state.readyz;
    if (!offline) {
      banner.dataset.state = "unknown";
      mode.dataset.value = "";
      mode.textContent = `mode ${DASH}`;
      detail.textContent = "";
      return;
    }
    const isOffline = offline.value === 1;
    banner.dataset.state = isOffline ? "offline" : "online";
    mode.dataset.value = String(offline.value);
    mode.textContent = isOffline ? "OFFLINE · local only" : "ONLINE";
    const parts = [];
    if (ready) {
      parts.push(`readiness: ${ready.status}`);
      if (isOffline && ready.offline) {
        const since = ready.offline.since ? new Date(ready.offline.since * 1000).toLocaleTimeString() : "";
        parts.push(`since ${since}: ${ready.offline.reason || ""}`);
      }
    }
    detail.textContent = parts.join(" · ");
  }

  function placementOf(deployment) {
    const dep = state.config.deployments[deployment];
    return dep ? dep.placement : "unknown";
  }

  function classNames(now) {
    const names = new Set(Object.keys(state.config.classes));
    for (const s of series(now, "hybridgate_requests_total")) names.add(s.labels.class);
    return [...names];
  }

  // The split of a class's requests in the window: by the placement of the deployment that
  // answered, answers from memory apart; and the failed ones among them.
  function splitOf(now, win, cls) {
    const req = "hybridgate_requests_total";
    const split = { local: 0, cloud: 0, memory: 0, other: 0 };
    let count = 0;
    let errors = 0;
    for (const s of series(now, req)) {
      if (s.labels.class !== cls) continue;
      const key = JSON.stringify(s.labels);
      const n = growth(now, win, req, (l) => JSON.stringify(l) === key);
      count += n;
      if (MEMORY_OUTCOMES.has(s.labels.outcome)) {
        split.memory += n;
        continue;
      }
      const p = s.labels.placement || placementOf(s.labels.deployment);
      split[p in split ? p : "other"] += n;
      if (s.labels.outcome !== "ok") errors += n;
    }
    return { split, count, errors };
  }

  // Burn rates from the gateway's own SLO events, where /metrics has them: for each SLO of the
  // class, the share of bad events in the window over the share its target allows.
  function sloBurns(now, win, cls) {
    const events = "hybridgate_slo_events_total";
    const burns = [];
    const slos = new Set(series(now, events).filter((x) => x.labels.class === cls).map((x) => x.labels.slo));
    for (const slo of slos) {
      const of = (good) => (l) => l.class === cls && l.slo === slo && l.good === good;
      const bad = growth(now, win, events, of("false"));
      const all = bad + growth(now, win, events, of("true"));
      const target = series(now, "hybridgate_slo_objective").find((x) => x.labels.class === cls && x.labels.slo === slo);
      const allowed = target ? 1 - target.value : NaN;
      burns.push({ slo, burn: all > 0 && allowed > 0 ? bad / all / allowed : NaN, target: target ? target.value : NaN });
    }
    return burns;
  }

  // Without SLO events: burn estimated from the latency histogram against the p95 and p99 budgets.
  function estimatedBurns(buckets, b95, b99) {
    const objectives = state.config.objectives;
    return [
      { slo: "p95", burn: fractionAbove(b95, buckets) / objectives.p95, budget: b95 },
      { slo: "p99", burn: fractionAbove(b99, buckets) / objectives.p99, budget: b99 },
    ];
  }

  // Everything a class tile shows, computed (no DOM).
  function classFigures(now, win, rate, cls, ttftFamily) {
    const budget = state.config.classes[cls] || {};
    const ofClass = (l) => l.class === cls;
    const req = "hybridgate_requests_total";
    const { split, count, errors } = splitOf(now, win, cls);
    const hasLatency = now.types.get(LATENCY_FAMILY) === "histogram";
    const buckets = hasLatency ? windowBuckets(now, win, LATENCY_FAMILY, cls) : [];
    const b95 = budget.p95_ms / 1000;
    const b99 = budget.p99_ms / 1000;
    const f = {
      budget, b95, b99, split, count, errors,
      bTtft: budget.ttft_ms / 1000,
      cumulative: total(now, req, ofClass),
      rate: rate ? growth(now, rate, req, ofClass) / (now.t - rate.t) : NaN,
      p50: histogramQuantile(0.5, buckets),
      p95: histogramQuantile(0.95, buckets),
      p99: histogramQuantile(0.99, buckets),
      ttftP95: ttftFamily ? histogramQuantile(0.95, windowBuckets(now, win, ttftFamily, cls)) : NaN,
      errorRatio: count > 0 ? errors / count : NaN,
      share: (n) => (count > 0 ? n / count : NaN),
    };
    const slo = sloBurns(now, win, cls);
    f.fromSlo = slo.length > 0;
    f.burns = f.fromSlo ? slo : estimatedBurns(buckets, b95, b99);
    const e = f.errorRatio;
    f.levels = {
      p50: against(f.p50, b95),
      p95: against(f.p95, b95),
      p99: against(f.p99, b99),
      ttft: against(f.ttftP95, f.bTtft),
      burn: worst(f.burns.map((b) => burnLevel(b.burn))),
      errors: !Number.isFinite(e) ? "none" : e > 0.05 ? "bad" : e > 0.01 ? "warn" : "ok",
    };
    return f;
  }

  function splitBar(f) {
    const bar = el("div", { class: "split-bar" });
    for (const part of ["local", "cloud", "memory", "other"]) {
      const share = f.share(f.split[part]);
      if (!(share > 0)) continue;
      const seg = el("span", { class: `seg ${part}` });
      seg.style.width = `${share * 100}%`; // CSSOM, which the CSP allows (a style attribute it would not)
      bar.append(seg);
    }
    return bar;
  }

  function classTile(cls, f) {
    const { levels, split } = f;
    const latencyRow = (label, metric, v, budgetS, level) =>
      el("tr", {},
        el("th", {}, label),
        el("td", {}, value(metric, v, fmtSeconds(v), level)),
        el("td", { class: "budget" }, budgetS ? `budget ${fmtSeconds(budgetS)}` : ""));
    const part = (name) =>
      el("span", { class: name }, `${name} `, value(`${name}_share`, f.share(split[name]), fmtPct(f.share(split[name]))),
        " (", value(`${name}_count`, split[name], fmtCount(split[name])), ")");
    const burns = f.burns.map((b) =>
      el("span", {
        class: `chip ${burnLevel(b.burn)}`,
        title: f.fromSlo ? `target ${fmtPct(b.target)} good` : `estimated from the histogram: ${b.slo} ≤ ${fmtSeconds(b.budget)}`,
      },
      `${b.slo.replace("latency_", "")} `,
      value(`burn_${b.slo}`, b.burn, Number.isFinite(b.burn) ? `×${b.burn.toFixed(2)}` : DASH)));
    return el("article", { class: `tile ${worst(Object.values(levels))}`, "data-class": cls },
      el("h3", {}, cls, el("small", {}, ` ${f.budget.placement || ""} · priority ${f.budget.priority ?? DASH}`)),
      el("div", { class: "big" },
        value("requests", f.cumulative, fmtCount(f.cumulative)), el("small", {}, " requests · "),
        value("request_rate", f.rate, fmtRate(f.rate, "req/s"))),
      splitBar(f),
      el("div", { class: "split" },
        part("local"),
        part("cloud"),
        el("span", { class: "memory" }, "memory ", value("memory_count", split.memory, fmtCount(split.memory)))),
      el("table", { class: "lat" },
        latencyRow("p50", "p50", f.p50, null, levels.p50),
        latencyRow("p95", "p95", f.p95, f.b95, levels.p95),
        latencyRow("p99", "p99", f.p99, f.b99, levels.p99),
        latencyRow("TTFT p95", "ttft_p95", f.ttftP95, f.bTtft, levels.ttft)),
      el("div", { class: "burn", "data-source": f.fromSlo ? "slo" : "estimate" },
        el("span", { class: "burn-label" }, f.fromSlo ? "budget burn" : "budget burn (est.)"), ...burns),
      el("div", { class: "errors" },
        "errors ", value("errors", f.errors, fmtCount(f.errors), levels.errors), " ",
        value("error_ratio", f.errorRatio, fmtPct(f.errorRatio), levels.errors)));
  }

  function renderClasses(now, win, rate) {
    const ttftFamily = histogramFamilies(now).find(
      (f) => TTFT_FAMILY.test(f) && series(now, f + "_bucket").some((x) => "class" in x.labels)
    );
    const tiles = classNames(now).map((cls) => classTile(cls, classFigures(now, win, rate, cls, ttftFamily)));
    replace(document.getElementById("classes"), ...tiles);
  }

  function gauge(now, key, deployment) {
    const s = series(now, `hybridgate_deployment_${key}`).find((x) => x.labels.deployment === deployment);
    return s ? s.value : NaN;
  }

  function renderDeployments(now) {
    const names = new Set(Object.keys(state.config.deployments));
    for (const s of series(now, "hybridgate_deployment_ready")) names.add(s.labels.deployment);
    const rows = [...names].map((name) => {
      const info = state.readyz && state.readyz.deployments ? state.readyz.deployments[name] : null;
      // The live state (circuit_open included) is the snapshot's; the top level is the lifecycle's.
      const depState = info ? (info.health && info.health.state) || info.state : "";
      const described = info && info.health && info.health.breaker ? info.health.breaker : null;
      // The state from /metrics when it has one (reason and until when only /readyz knows).
      const current = series(now, "hybridgate_breaker_state").find((x) => x.labels.deployment === name && x.value === 1);
      const breaker = current ? { ...(described || {}), state: current.labels.state } : described;
      if (current && described && described.state !== current.labels.state) {
        breaker.open_until = null; // /readyz was read at another moment than /metrics
        breaker.reason = "";
      }
      const ready = gauge(now, "ready", name);
      const inFlight = gauge(now, "in_flight", name);
      const queued = gauge(now, "queued", name);
      const requests = total(now, "hybridgate_requests_total", (l) => l.deployment === name);
      const errors = total(now, "hybridgate_requests_total",
        (l) => l.deployment === name && l.outcome !== "ok" && !MEMORY_OUTCOMES.has(l.outcome));
      const stateLevel = !depState ? "none" : depState === "ready" ? "ok"
        : depState === "unconfigured" || depState === "starting" ? "warn" : "bad";
      const breakerLevel = !breaker ? "none" : breaker.state === "closed" ? "ok"
        : breaker.state === "half_open" ? "warn" : "bad";
      let breakerText = breaker ? breaker.state.replace("_", "-") : DASH;
      if (breaker && breaker.open_until) breakerText += ` until ${new Date(breaker.open_until * 1000).toLocaleTimeString()}`;
      const ttft = gauge(now, "ttft_p95_seconds", name);
      const tps = gauge(now, "tokens_per_second", name);
      return el("tr", { "data-deployment": name },
        el("td", {}, name),
        el("td", {}, placementOf(name)),
        el("td", {}, el("span", { class: `pill ${stateLevel}`, "data-metric": "state", "data-value": depState }, depState || DASH)),
        el("td", { title: breaker && breaker.reason ? breaker.reason : "" },
          el("span", { class: `pill ${breakerLevel}`, "data-metric": "breaker", "data-value": breaker ? breaker.state : "" }, breakerText),
          breaker && breaker.reason ? el("small", { class: "reason" }, ` ${breaker.reason}`) : ""),
        el("td", { class: "num" }, value("ready", ready, Number.isFinite(ready) ? (ready === 1 ? "yes" : "no") : DASH, ready === 1 ? "ok" : Number.isFinite(ready) ? "bad" : "none")),
        el("td", { class: "num" }, value("in_flight", inFlight, fmtCount(inFlight))),
        el("td", { class: "num" }, value("queued", queued, fmtCount(queued), queued > 0 ? "warn" : "")),
        el("td", { class: "num" }, value("requests", requests, fmtCount(requests))),
        el("td", { class: "num" }, value("errors", errors, fmtCount(errors), errors > 0 ? "warn" : "")),
        el("td", { class: "num" }, value("ttft_p95_predicted", ttft, fmtSeconds(ttft))),
        el("td", { class: "num" }, value("tokens_per_second", tps, Number.isFinite(tps) ? tps.toFixed(1) : DASH)));
    });
    replace(document.querySelector("#deployments tbody"), ...rows);
  }

  function renderCost(now, rate) {
    const costName = "hybridgate_cost_usd_total";
    const tokName = "hybridgate_tokens_total";
    const placements = new Set(Object.values(state.config.deployments).map((d) => d.placement));
    for (const s of series(now, costName)) placements.add(s.labels.placement);
    const present = now.samples.has(costName) || now.types.has("hybridgate_cost_usd");
    const row = (label, match) => {
      const cumulative = present ? total(now, costName, match) : NaN;
      const perHour = present && rate ? (growth(now, rate, costName, match) / (now.t - rate.t)) * 3600 : NaN;
      const tin = total(now, tokName, (l) => match(l) && l.direction === "prompt");
      const tout = total(now, tokName, (l) => match(l) && l.direction === "completion");
      return el("tr", { "data-placement": label },
        el("td", {}, label),
        el("td", { class: "num" }, value("cost_rate_per_hour", perHour, Number.isFinite(perHour) ? `${fmtUsd(perHour)}/h` : DASH)),
        el("td", { class: "num" }, value("cost_total", cumulative, fmtUsd(cumulative))),
        el("td", { class: "num" }, value("tokens_in", tin, fmtCount(tin)), " / ", value("tokens_out", tout, fmtCount(tout))));
    };
    const rows = [...placements].sort().map((p) => row(p, (l) => l.placement === p));
    rows.push(row("all", () => true));
    rows[rows.length - 1].className = "total";
    replace(document.querySelector("#cost tbody"), ...rows);
  }

  // Every series of a sensitive-data family (e.g. requests by class and action), as it comes.
  function renderSensitive(now, win) {
    const declared = [...now.types.keys()].some((f) => SENSITIVE_FAMILY.test(f));
    const items = [];
    for (const [name, list] of now.samples) {
      if (!SENSITIVE_FAMILY.test(name) || name.endsWith("_created")) continue;
      for (const s of list) {
        const labels = Object.entries(s.labels).map(([k, v]) => `${k}=${v}`).join(" ");
        const recent = growth(now, win, name, (l) => JSON.stringify(l) === JSON.stringify(s.labels));
        items.push(el("li", { "data-series": `${name}{${labels}}` },
          el("span", { class: "label" }, Object.values(s.labels).join(" · ") || name.replace(/^hybridgate_/, "")),
          " ", value("sensitive", s.value, fmtCount(s.value), s.labels.action === "refused" && s.value > 0 ? "warn" : ""),
          el("small", {}, ` (+${fmtCount(recent)} recent)`)));
      }
    }
    const box = document.getElementById("sensitive");
    if (items.length > 0) replace(box, el("ul", { class: "list" }, ...items));
    else if (declared) {
      replace(box, el("p", { class: "absent" }, value("sensitive", 0, "0"), " requests with sensitive data so far"));
    } else {
      replace(box, el("p", { class: "absent", "data-metric": "sensitive", "data-value": "" },
        `${DASH} not in /metrics: this gateway does not export sensitive-data actions`));
    }
  }

  function renderResilience(now, win) {
    const list = el("ul", { class: "list" });
    const add = (family, label) => {
      for (const s of series(now, family)) {
        const key = s.labels.kind || s.labels.result;
        const recent = growth(now, win, family, (l) => (l.kind || l.result) === key);
        list.append(el("li", { "data-series": `${family}{${key}}` },
          el("span", { class: "label" }, `${label} ${key}`), " ",
          value("count", s.value, fmtCount(s.value)), el("small", {}, ` (+${fmtCount(recent)} recent)`)));
      }
    };
    add("hybridgate_extra_attempts_total", "attempts:");
    add("hybridgate_memory_total", "memory:");
    const box = document.getElementById("resilience");
    if (list.children.length === 0) replace(box, el("p", { class: "absent" }, DASH));
    else replace(box, list);
  }

  // ------------------------------------------------------------------ start

  function onKey(event) {
    event.preventDefault();
    const input = document.getElementById("key-input");
    state.key = input.value.trim();
    input.value = "";
    if (state.key) sessionStorage.setItem(KEY_STORAGE, state.key);
    start();
  }

  // For tests and the curious: the pure functions and the state (raw scrapes included).
  window.hybridgateDashboard = {
    parsePrometheus,
    histogramQuantile,
    fractionAbove,
    state,
    windowBase: () => baseFor(WINDOW_S),
    WINDOW_S,
    RATE_S,
  };

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("key-form").addEventListener("submit", onKey);
    start();
  });
})();
