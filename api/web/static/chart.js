// A small SVG line chart: time on x, a value on y, one line per series, optional
// vertical markers (strategy switches, model promotions). Drawn anew on every update.

const NS = "http://www.w3.org/2000/svg";
export const COLORS = ["#1f6feb", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#0a7d8c", "#bc4c00", "#57606a"];

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// The smallest of 1, 2, 2.5, 5 times a power of ten that is at least x: round grid lines.
function niceStep(x) {
  const power = 10 ** Math.floor(Math.log10(x));
  return [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= x);
}

// series: [{name, points: [[t, v], ...]}]; markers: [{t, label}]; t in seconds.
export function lineChart(target, series, { yMin = 0, yMax, yFormat = (v) => v.toFixed(1), maxSpan = 300, markers = [], width = 480, height = 180 } = {}) {
  const W = width, H = height, L = 44, R = 8, T = 8, B = 22;
  const now = Date.now() / 1000;
  // The window grows with the history, from 30 s up to `maxSpan`: a page opened a moment ago
  // shows its few points across the chart rather than squeezed against "now".
  const first = Math.min(now, ...series.flatMap((s) => s.points.map(([t]) => t)));
  const span = Math.min(maxSpan, Math.max(30, now - first));
  const t0 = now - span;
  const values = series.flatMap((s) => s.points.filter(([t]) => t >= t0).map(([, v]) => v)).filter((v) => v !== null);
  const peak = values.length ? Math.max(...values) : yMin;
  const top = yMax ?? yMin + 4 * niceStep(peak > yMin ? ((peak - yMin) * 1.1) / 4 : 1);
  const x = (t) => L + ((t - t0) / span) * (W - L - R);
  const y = (v) => T + (1 - (v - yMin) / (top - yMin || 1)) * (H - T - B);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
  for (let i = 0; i <= 4; i++) {
    const v = yMin + ((top - yMin) * i) / 4;
    root.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    root.append(svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end" }, yFormat(v)));
  }
  root.append(svg("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
  for (const ago of [span, span / 2, 0]) {
    root.append(svg("text", { x: x(now - ago), y: H - 6, "text-anchor": ago === span ? "start" : ago ? "middle" : "end" },
      ago >= 90 ? `-${Math.round(ago / 60)} min` : ago ? `-${Math.round(ago)} s` : "now"));
  }
  for (const m of markers.filter((m) => m.t >= t0 && m.t <= now + 5)) {
    const mx = Math.min(x(m.t), W - R);
    root.append(svg("line", { x1: mx, x2: mx, y1: T, y2: H - B, class: "marker" }));
    const nearRight = mx > W - 120; // label on the line's left, so it stays inside the chart
    root.append(svg("text", { x: nearRight ? mx - 3 : mx + 3, y: T + 10, class: "marker-label",
      "text-anchor": nearRight ? "end" : "start" }, m.label));
    root.lastChild.append(svg("title", {}, m.title || m.label));
  }
  series.forEach((s, i) => {
    const pts = s.points.filter(([t, v]) => t >= t0 && v !== null);
    if (!pts.length) return;
    const color = s.color || COLORS[i % COLORS.length];
    root.append(svg("polyline", { points: pts.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
      fill: "none", stroke: color, "stroke-width": 2, "stroke-dasharray": s.dashed ? "5 4" : "none" }));
    const [lt, lv] = pts[pts.length - 1];
    root.append(svg("circle", { cx: x(lt), cy: y(lv), r: 2.5, fill: color }));
  });
  const legend = document.createElement("ul");
  legend.className = "legend";
  series.forEach((s, i) => {
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = s.color || COLORS[i % COLORS.length];
    const last = s.points.length ? s.points[s.points.length - 1][1] : null;
    li.append(sw, `${s.name}${last !== null && last !== undefined ? ` ${yFormat(last)}` : ""}`);
    legend.append(li);
  });
  target.replaceChildren(root, legend);
}

// Keeps the last `window` seconds of points per named series.
export class History {
  constructor(window = 300) {
    this.window = window;
    this.series = new Map();
  }

  push(name, t, v) {
    if (!this.series.has(name)) this.series.set(name, []);
    const pts = this.series.get(name);
    pts.push([t, v]);
    while (pts.length && pts[0][0] < t - this.window) pts.shift();
  }

  get(name) {
    return this.series.get(name) || [];
  }

  names() {
    return [...this.series.keys()];
  }
}
