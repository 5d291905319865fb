// The JSON API as the pages use it, and the keys panel both pages share.
// Keys live in sessionStorage: they last as long as the tab and are sent only to this
// origin. With no key configured on the server (the `make run` default) none is needed.

const KEY_FIELDS = {
  read: "Read key (EDDY_READ_API_KEY)",
  producer: "Producer key (EDDY_PRODUCER_API_KEY)",
  admin: "Admin key (EDDY_ADMIN_API_KEY)",
  token: "User token (Bearer, from `eddy token USER`)",
};

export function getKey(name) {
  return sessionStorage.getItem(`eddy.${name}`) || "";
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.detail = detail;
  }
}

// `as` picks the key a request needs: reads send the read key, producing the producer
// key, admin calls the admin key; the user token goes along with reads of a user's data.
export async function api(path, { method = "GET", body, as = "read", allow = [] } = {}) {
  const headers = { Accept: "application/json" };
  const key = getKey(as);
  if (key) headers["X-API-Key"] = key;
  const token = getKey("token");
  if (token && as === "read") headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = resp.headers.get("content-type")?.includes("json") ? await resp.json() : null;
  if (resp.ok || allow.includes(resp.status)) return { status: resp.status, data };
  throw new ApiError(resp.status, data?.detail ?? resp.statusText);
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

export function keysPanel(container) {
  const form = el("form", { class: "keys" });
  for (const [name, label] of Object.entries(KEY_FIELDS)) {
    form.append(
      el("label", {}, label,
        el("input", { type: "password", name, autocomplete: "off", value: getKey(name), "data-key": name }))
    );
  }
  const saved = el("span", { class: "muted", role: "status" });
  form.append(el("button", { type: "submit" }, "Save for this tab"), saved);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    for (const input of form.querySelectorAll("input[data-key]")) {
      if (input.value) sessionStorage.setItem(`eddy.${input.dataset.key}`, input.value);
      else sessionStorage.removeItem(`eddy.${input.dataset.key}`);
    }
    saved.textContent = "saved";
    form.dispatchEvent(new CustomEvent("keys-changed", { bubbles: true }));
  });
  container.append(el("details", {}, el("summary", {}, "API keys"), form));
}

export function fmt(value, digits = 3) {
  return value === null || value === undefined || Number.isNaN(value) ? "–" : Number(value).toFixed(digits);
}
