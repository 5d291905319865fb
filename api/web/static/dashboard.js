// The live dashboard: polls the read-only JSON endpoints and draws the last five minutes.
// Rates (events/s) come from successive reads of the worker's cumulative counts.
import { api, el, fmt, keysPanel } from "./api.js";
import { History, lineChart } from "./chart.js";

const $ = (id) => document.getElementById(id);
const hist = new History(300);
let previous = null; // the last /api/dashboard answer, for rates
const switchesSeen = new Map(); // decision_id -> marker

const pct = (v) => `${(100 * v).toFixed(0)}%`;
const secs = (v) => (v < 10 ? `${v.toFixed(1)} s` : `${v.toFixed(0)} s`);

function figures(target, pairs) {
  target.replaceChildren(...pairs.map(([label, value]) => el("span", {}, el("b", {}, value), ` ${label}`)));
}

function series(names, label = (n) => n, extra = () => ({})) {
  return names.map((n) => ({ name: label(n), points: hist.get(n), ...extra(n) }));
}

async function pollDashboard() {
  const { data } = await api("/api/dashboard");
  const now = data.now;
  const topics = Object.keys(data.applied).filter((t) => !t.includes("dead"));
  if (previous) {
    const dt = Math.max(1e-3, now - previous.now);
    let total = 0;
    for (const t of topics) {
      const rate = Math.max(0, (data.applied[t] - (previous.applied[t] || 0)) / dt);
      total += rate;
      hist.push(`rate:${t}`, now, rate);
    }
    hist.push("rate:all", now, total);
    figures($("rate-figures"), [["events/s in all", total.toFixed(0)],
      ...topics.map((t) => [t, hist.get(`rate:${t}`).at(-1)[1].toFixed(0)])]);
  } else {
    figures($("rate-figures"), [["events applied so far", Object.values(data.applied).reduce((a, b) => a + b, 0).toLocaleString()]]);
  }
  previous = data;
  lineChart($("rate-chart"), [{ name: "all", points: hist.get("rate:all") },
    ...series(topics.map((t) => `rate:${t}`), (n) => n.slice(5))], { yFormat: (v) => v.toFixed(0) });

  if (data.lag.error) {
    figures($("lag-figures"), [[data.lag.error, "?"]]);
  } else {
    hist.push("lag", now, data.lag.total);
    for (const [t, n] of Object.entries(data.lag.by_topic)) hist.push(`lag:${t}`, now, n);
    figures($("lag-figures"), [["records behind", String(data.lag.total)],
      ...Object.entries(data.lag.by_topic).map(([t, n]) => [t, String(n)])]);
  }
  lineChart($("lag-chart"), [{ name: "total", points: hist.get("lag") }], { yFormat: (v) => v.toFixed(0) });

  const f = data.freshness;
  for (const [name, value] of Object.entries(f)) if (value !== null) hist.push(`fresh:${name}`, now, value);
  figures($("fresh-figures"), [["since the recommender last learned", f.recommender_s === null ? "–" : secs(f.recommender_s)],
    ["since popular list", f.popular_s === null ? "–" : secs(f.popular_s)]]);
  lineChart($("fresh-chart"), [{ name: "recommender", points: hist.get("fresh:recommender_s") },
    { name: "popular list", points: hist.get("fresh:popular_s"), dashed: true }], { yFormat: (v) => `${v < 10 ? v.toFixed(1) : v.toFixed(0)}s` });

  renderAlerts(data.alerts);
  $("workers").replaceChildren(
    el("tr", {}, el("th", {}, "worker"), el("th", {}, "partitions"), el("th", {}, "assigned")),
    ...data.workers.map((w) => el("tr", {}, el("td", {}, w.worker), el("td", {}, String(w.partitions)),
      el("td", {}, new Date(w.assigned_at * 1000).toLocaleTimeString()))));
  $("updated").textContent = `updated ${new Date(now * 1000).toLocaleTimeString()}`;
}

function renderAlerts(alerts) {
  const list = $("alerts");
  if (!Array.isArray(alerts)) {
    list.replaceChildren(el("li", { class: "muted" }, alerts.error));
    return;
  }
  if (!alerts.length) {
    list.replaceChildren(el("li", { class: "muted" }, "none"));
    return;
  }
  list.replaceChildren(...alerts.map((a) => el("li", { class: a.severity || "info", "data-kind": a.kind },
    el("strong", {}, `${a.kind} · ${a.subject}`), " ",
    el("span", { class: "muted" }, a.ts ? new Date(a.ts * 1000).toLocaleTimeString() : ""), el("br"), a.detail || "")));
}

async function pollQuality() {
  const now = Date.now() / 1000;
  const [{ data: recs }, { data: bids }] = await Promise.all([api("/api/models/recommender"), api("/api/models/bids")]);
  const eddy = recs.online.eddy, pop = recs.online.popularity;
  if (eddy?.hr_at_10 !== null && eddy?.hr_at_10 !== undefined) hist.push("hr:eddy", now, eddy.hr_at_10);
  if (pop?.hr_at_10 !== null && pop?.hr_at_10 !== undefined) hist.push("hr:popularity", now, pop.hr_at_10);
  if (recs.ctr.overall !== null) hist.push("ctr", now, recs.ctr.overall);
  figures($("quality-figures"), [["HR@10 Eddy", eddy ? fmt(eddy.hr_at_10) : "–"], ["HR@10 popularity", pop ? fmt(pop.hr_at_10) : "–"],
    ["CTR", recs.ctr.overall === null ? "–" : pct(recs.ctr.overall)], ["targets", String(eddy?.targets ?? 0)]]);
  lineChart($("quality-chart"), [{ name: "HR@10 Eddy", points: hist.get("hr:eddy") },
    { name: "HR@10 popularity", points: hist.get("hr:popularity"), dashed: true },
    { name: "CTR", points: hist.get("ctr") }], { yMax: 1, yFormat: (v) => v.toFixed(2) });

  // AUC does not add up over workers: each worker's is weighted by the outcomes it saw.
  const workers = Object.values(bids.workers);
  const weighted = (pick) => {
    const rows = workers.map((w) => [pick(w), w.model_scores.outcomes]).filter(([v, n]) => v !== null && n);
    const n = rows.reduce((a, [, k]) => a + k, 0);
    return n ? rows.reduce((a, [v, k]) => a + v * k, 0) / n : null;
  };
  const auc = weighted((w) => w.model_scores.cumulative.roc_auc);
  const rolling = weighted((w) => w.model_scores.rolling.roc_auc);
  const base = weighted((w) => w.baseline_scores.cumulative.roc_auc);
  if (auc !== null) hist.push("auc", now, auc);
  if (rolling !== null) hist.push("auc:rolling", now, rolling);
  if (base !== null) hist.push("auc:baseline", now, base);
  figures($("bids-figures"), [["ROC AUC", fmt(auc)], ["rolling", fmt(rolling)], ["baseline", fmt(base)],
    ["outcomes learned", String(bids.learned)], ["pending", String(bids.pending)]]);
  lineChart($("bids-chart"), [{ name: "AUC", points: hist.get("auc") }, { name: "rolling AUC", points: hist.get("auc:rolling") },
    { name: "baseline AUC", points: hist.get("auc:baseline"), dashed: true }], { yMin: 0, yMax: 1, yFormat: (v) => v.toFixed(2) });
  return { recs, bids };
}

async function pollStrategies() {
  const { data } = await api("/api/scraping/analytics");
  const now = Date.now() / 1000;
  const domains = Object.entries(data.by_domain).sort((a, b) => b[1].attempts - a[1].attempts).slice(0, 8);
  for (const [d, v] of domains) if (v.current_recent_success_rate !== null) hist.push(`dom:${d}`, now, v.current_recent_success_rate);
  for (const sw of data.switches_last_day) {
    switchesSeen.set(sw.decision_id, { t: sw.ts, label: `${sw.domain}: ${sw.to}`, title: `${sw.domain}: ${sw.from} → ${sw.to} (${sw.trigger})` });
  }
  lineChart($("strategy-chart"), series(domains.map(([d]) => `dom:${d}`), (n) => n.slice(4)),
    { yMax: 1, yFormat: pct, markers: [...switchesSeen.values()],
      width: $("strategy-chart").clientWidth > 600 ? 960 : 480, height: 220 });
  $("strategy-table").replaceChildren(
    el("tr", {}, ...["domain", "strategy", "success", "recent", "trend", "switches (day)"].map((h) => el("th", {}, h))),
    ...domains.map(([d, v]) => el("tr", {}, el("td", {}, d),
      el("td", {}, `${v.current ?? "–"}${v.pinned ? " (pinned)" : ""}${v.no_working_strategy ? " ⚠ none working" : ""}`),
      el("td", {}, v.success_rate === null ? "–" : pct(v.success_rate)),
      el("td", {}, v.current_recent_success_rate === null ? "–" : pct(v.current_recent_success_rate)),
      el("td", {}, fmt(v.trend, 2)),
      el("td", {}, String(data.switches_last_day.filter((s) => s.domain === d).length)))));
}

// The model registry (GET /api/models) may not exist on this deployment: then the
// versions the workers report are shown, without promote or rollback.
async function pollModels() {
  const box = $("models");
  const { status, data } = await api("/api/models", { allow: [404] });
  if (status === 404) {
    quality = quality ?? (await pollQuality());
    const rows = [["recommender", quality?.recs?.model_version], ["bids", Object.values(quality?.bids?.workers || {})[0]?.model_version]];
    box.replaceChildren(el("p", { class: "muted", id: "registry-unavailable" }, "Model registry unavailable: showing the versions the workers serve."),
      el("table", {}, el("tr", {}, el("th", {}, "model"), el("th", {}, "serving")),
        ...rows.map(([n, v]) => el("tr", {}, el("td", {}, n), el("td", {}, v ?? "–")))));
    return;
  }
  box.replaceChildren(...data.models.map((m) => el("div", { class: "table-wrap" },
    el("h3", {}, `${m.name} · serving ${m.serving ?? "–"}`),
    el("table", { "data-model": m.name },
      el("tr", {}, ...["version", "variant", "role", "created", "metrics", ""].map((h) => el("th", {}, h))),
      ...m.versions.map((v) => el("tr", { class: v.serving ? "serving" : "" },
        el("td", {}, v.version), el("td", {}, v.variant ?? ""), el("td", {}, v.role ?? ""),
        el("td", {}, v.created_at ? new Date(v.created_at * 1000).toLocaleString() : ""),
        el("td", {}, Object.entries(v.metrics || {}).map(([k, x]) => `${k} ${metric(k, x)}`).join(", ")),
        el("td", {}, v.serving ? "serving" : el("button", { type: "button", class: "secondary", onclick: () => admin(`/api/models/${encodeURIComponent(m.name)}/promote/${encodeURIComponent(v.version)}`, `promote ${m.name} ${v.version}`) }, "Promote"))))),
    // Rolling back needs a version to go back to.
    m.versions.length > 1 ? el("button", { type: "button", class: "danger", onclick: () => admin(`/api/models/${encodeURIComponent(m.name)}/rollback`, `roll back ${m.name}`) }, `Roll back ${m.name}`) : null)));
}

// A registry figure as people read it: counts as whole numbers, times as dates, rates to 3 places.
function metric(name, value) {
  if (typeof value !== "number") return value;
  if (/(_at|_time|^ts)$/.test(name) && value > 1e9) return new Date(value * 1000).toLocaleString();
  return Number.isInteger(value) ? value.toLocaleString() : fmt(value);
}

async function admin(path, what) {
  try {
    await api(path, { method: "POST", as: "admin" });
    $("models-status").textContent = `${what}: done`;
    await pollModels();
  } catch (err) {
    $("models-status").textContent = `${what} refused (${err.status}): ${err.message}`;
  }
}

function every(ms, fn) {
  let busy = false;
  const tick = async () => {
    if (busy || document.hidden) return;
    busy = true;
    try {
      await fn();
    } catch (err) {
      $("updated").textContent = `could not refresh: ${err.message}`;
    } finally {
      busy = false;
    }
  };
  tick();
  return setInterval(tick, ms);
}

keysPanel($("keys"));
let quality = null;
every(1000, pollDashboard);
every(2000, async () => { quality = await pollQuality(); });
every(2000, pollStrategies);
every(5000, pollModels);
