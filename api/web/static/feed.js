// The feed: a user's list with its reasons and scores, actions sent back as interaction
// events (with the list's rec_id and the item's position), the profile, and forget me.
// After an action the list is polled until it reflects the action (its `reflects` names
// the action's event id, or one sent after it), so the change shows within about a second
// of the click, and the profile read then includes the action too.
import { api, el, fmt, keysPanel } from "./api.js";

const K = 10;
const state = { user: null, recId: null, items: [], impressed: new Set(), hidden: new Set(), action: 0, pending: null,
                profileSeq: 0 };
const $ = (id) => document.getElementById(id);

function status(text) {
  $("status").textContent = text;
}

function sameIds(a, b) {
  return a.length === b.length && a.every((e, i) => e.item_id === b[i].item_id);
}

async function fetchRecs() {
  const params = new URLSearchParams({ user_id: state.user, k: String(K) });
  if (state.hidden.size) params.set("exclude", [...state.hidden].join(","));
  return (await api(`/api/recommendations?${params}`)).data;
}

// Returns the ids the API gave the events. While an action waits for its list, the ids of
// whatever is sent after the action was acked join its wait: they come after it in the
// user's partition, so a list that reflects one of them reflects the action too.
async function send(events) {
  const pending = state.pending;
  const ids = (await api("/api/events", { method: "POST", body: events, as: "producer" })).data?.event_ids ?? [];
  if (pending) ids.forEach((id) => pending.add(id));
  return ids;
}

function interaction(entry, action, value) {
  const event = { type: "interaction", user_id: state.user, item_id: entry.item_id, action,
                  rec_id: state.recId, position: entry.position };
  if (value !== undefined) event.value = value;
  return event;
}

// Impressions are what was shown: sent once per item and page visit, so the served
// lists' click-through rate by position means something.
async function sendImpressions() {
  const fresh = state.items.filter((e) => !state.impressed.has(e.item_id));
  if (!fresh.length) return;
  fresh.forEach((e) => state.impressed.add(e.item_id));
  await send(fresh.map((e) => interaction(e, "impression")));
}

function render(doc) {
  state.recId = doc.rec_id;
  state.items = doc.items;
  const when = doc.computed_at ? new Date(doc.computed_at * 1000).toLocaleTimeString() : "never";
  $("recs-meta").textContent = doc.cold_start
    ? "New here: popular items until Eddy learns your taste."
    : `${doc.model} ${doc.model_version ?? ""} · computed ${when}`;
  const list = $("recs");
  list.replaceChildren(...doc.items.map(itemCard));
  if (!doc.items.length) list.append(el("li", { class: "muted" }, "Nothing to recommend yet."));
}

function itemCard(entry) {
  const item = entry.item || {};
  const act = (action, label, extra = {}) =>
    el("button", { type: "button", class: `act ${action}`, "data-action": action, "aria-label": `${action} ${item.title || entry.item_id}`,
                   onclick: () => onAction(entry, action), ...extra }, label);
  const rate = el("select", { "aria-label": `rate ${item.title || entry.item_id}`, "data-action": "rate",
                              onchange: (ev) => ev.target.value && onAction(entry, "rate", Number(ev.target.value)) },
    el("option", { value: "" }, "Rate"),
    [1, 2, 3, 4, 5].map((n) => el("option", { value: String(n) }, "★".repeat(n))));
  return el("li", { class: "item", "data-item-id": entry.item_id, "data-category": item.category ?? "" },
    el("div", { class: "item-head" },
      el("button", { type: "button", class: "title", "data-action": "click", onclick: () => onAction(entry, "click") },
        item.title || entry.item_id),
      el("span", { class: "score", title: "score" }, fmt(entry.score, 3))),
    el("div", { class: "item-meta" },
      item.category ? el("span", { class: "chip" }, item.category) : null,
      el("span", { class: "reason" }, entry.reason || "")),
    el("div", { class: "actions" }, act("like", "♥ Like"), act("dislike", "✕ Dislike"), rate, act("hide", "Hide")));
}

async function onAction(entry, action, value) {
  const started = performance.now();
  // A newer action takes over the wait: the status always speaks of the latest click.
  const seq = ++state.action;
  let pending;
  try {
    pending = new Set(await send([interaction(entry, action, value)]));
  } catch (err) {
    status(`Could not send ${action}: ${err.message}`);
    return;
  }
  state.pending = pending;
  if (action === "hide") {
    state.hidden.add(entry.item_id);
    document.querySelector(`li[data-item-id="${CSS.escape(entry.item_id)}"]`)?.remove();
  }
  if (action === "click" && entry.item?.url && /^https?:\/\//.test(entry.item.url)) {
    window.open(entry.item.url, "_blank", "noopener");
  }
  status(`${action} sent; waiting for the new list…`);
  // Often for the first seconds, then patiently: a busy worker is late, not gone.
  const patient = performance.now() + 3000;
  const deadline = performance.now() + 30000;
  let told = false;
  while (performance.now() < deadline) {
    const doc = await fetchRecs();
    if (seq !== state.action) return;
    if (!doc.cold_start && (doc.reflects ?? []).some((id) => pending.has(id))) {
      state.pending = null;
      render(doc);
      status(`${action} on “${entry.item?.title || entry.item_id}”: list updated in ${((performance.now() - started) / 1000).toFixed(2)} s`);
      await Promise.all([sendImpressions(), loadProfile(false)]);
      return;
    }
    const late = performance.now() > patient;
    if (late && !told) {
      told = true;
      status(`${action} sent; the list has not changed yet, still waiting…`);
    }
    await new Promise((r) => setTimeout(r, late ? 600 : 120));
  }
  if (seq !== state.action) return;
  state.pending = null;
  status(`${action} sent; the list has not changed in 30 s.`);
  await loadProfile(false);
}

function bars(facets) {
  const top = Math.max(1, ...facets.map((f) => f.count));
  return el("ul", { class: "bars" }, facets.map((f) => {
    const bar = el("span", { class: "bar" });
    bar.style.width = `${(100 * f.count) / top}%`;
    return el("li", {}, el("span", { class: "bar-label" }, f.name), el("span", { class: "bar-track" }, bar),
      el("span", { class: "bar-value" }, `${f.positive}/${f.count}${f.mean_rating ? ` · ${f.mean_rating}★` : ""}`));
  }));
}

async function loadProfile(cold) {
  const box = $("profile");
  const seq = ++state.profileSeq;  // only the latest load renders: answers can come back out of order
  if (cold) {
    box.replaceChildren(el("p", { class: "muted" }, "No interactions yet."));
    return;
  }
  const { status: code, data } = await api(`/api/users/${encodeURIComponent(state.user)}/profile`, { allow: [404] });
  if (seq !== state.profileSeq) return;
  if (code === 404) {
    box.replaceChildren(el("p", { class: "muted" }, "No interactions yet."));
    return;
  }
  const style = data.rating_style;
  const counts = Object.entries(data.counts).filter(([a]) => a !== "impression").map(([a, n]) => `${a} ${n}`).join(" · ");
  const meter = el("span", { class: "bar" });
  meter.style.width = `${100 * data.diversity}%`;
  box.replaceChildren(...[
    el("p", {}, el("strong", {}, String(data.interactions)), " interactions", counts ? ` (${counts})` : ""),
    el("h3", {}, "Favourite categories"),
    data.favourite_categories.length ? bars(data.favourite_categories) : el("p", { class: "muted" }, "none yet"),
    el("h3", {}, "Rating style"),
    el("p", { id: "rating-style" }, style.style ? `${style.style} (mean ${style.mean}★ over ${style.ratings})` : "no ratings yet"),
    el("h3", {}, "Diversity"),
    el("p", { class: "meter", id: "diversity" }, el("span", { class: "bar-track" }, meter), ` ${fmt(data.diversity, 2)}`),
    Object.keys(data.declared_interests).length
      ? el("p", {}, "Declared interests: ", Object.entries(data.declared_interests).map(([k, v]) => `${k} ${v}`).join(", "))
      : null,
  ].filter(Boolean));
}

async function show(user) {
  state.user = user;
  state.impressed.clear();
  state.hidden.clear();
  $("user-id").value = user;
  $("forget").disabled = false;
  const url = new URL(location.href);
  url.searchParams.set("user", user);
  history.replaceState(null, "", url);
  remember(user);
  try {
    const doc = await fetchRecs();
    render(doc);
    status(`Showing ${user}${doc.cold_start ? " (cold start)" : ""}.`);
    await Promise.all([sendImpressions(), loadProfile(doc.cold_start)]);
  } catch (err) {
    status(`Could not load ${user}: ${err.message}`);
  }
}

// Background refresh: the list and the profile can change without this tab doing anything
// (new items, trends, another device). The list is re-rendered only when its items change,
// so a pending click keeps the rec_id and positions it was shown with.
async function refresh() {
  if (!state.user || document.hidden) return;
  try {
    const doc = await fetchRecs();
    if (!sameIds(doc.items, state.items)) {
      render(doc);
      await Promise.all([sendImpressions(), loadProfile(doc.cold_start)]);
    } else {
      await loadProfile(doc.cold_start);
    }
  } catch {
    /* shown on the next action */
  }
}

function remember(user) {
  const recent = JSON.parse(localStorage.getItem("eddy.users") || "[]").filter((u) => u !== user);
  if (user) recent.unshift(user);
  localStorage.setItem("eddy.users", JSON.stringify(recent.slice(0, 10)));
  $("recent-users").replaceChildren(...recent.slice(0, 10).map((u) => el("option", { value: u })));
}

function setupForget() {
  const [ask, yes, no] = [$("forget"), $("forget-confirm"), $("forget-cancel")];
  const toggle = (confirming) => {
    ask.hidden = confirming;
    yes.hidden = no.hidden = !confirming;
  };
  ask.addEventListener("click", () => toggle(true));
  no.addEventListener("click", () => toggle(false));
  yes.addEventListener("click", async () => {
    toggle(false);
    try {
      await api(`/api/users/${encodeURIComponent(state.user)}`, { method: "DELETE", as: "producer" });
    } catch (err) {
      status(`Could not forget ${state.user}: ${err.message}`);
      return;
    }
    status(`Forgetting ${state.user}…`);
    const deadline = performance.now() + 5000;
    while (performance.now() < deadline) {
      const doc = await fetchRecs();
      if (doc.cold_start) {
        render(doc);
        await loadProfile(true);
        status(`${state.user} forgotten: every interaction and the profile are gone.`);
        return;
      }
      await new Promise((r) => setTimeout(r, 150));
    }
    status("Deletion sent; the worker has not applied it yet.");
  });
}

function init() {
  keysPanel($("keys"));
  setupForget();
  remember(null);
  $("pick-user").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const user = $("user-id").value.trim();
    if (user) show(user);
  });
  $("new-user").addEventListener("click", () => show(`web-${Math.random().toString(36).slice(2, 8)}`));
  document.addEventListener("keys-changed", () => state.user && show(state.user));
  const initial = new URL(location.href).searchParams.get("user");
  if (initial) show(initial);
  setInterval(refresh, 3000);
}

init();
