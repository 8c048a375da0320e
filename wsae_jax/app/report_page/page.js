// wsae report: the page's script. Plain JavaScript, no library; everything it shows comes from
// the JSON in #report-data. Panels are built the first time they are shown; a latent's panel is
// built when it is opened, from arrays decoded on first use.
"use strict";

const D = JSON.parse(document.getElementById("report-data").textContent);

// -- small helpers --------------------------------------------------------------------------------
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of kids.flat()) if (c != null) e.append(c instanceof Node ? c : String(c));
  return e;
}
const SVGNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...kids) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of kids.flat()) if (c != null) e.append(c);
  return e;
}
function b64(s, Type) {
  const bin = atob(s);
  const u8 = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
  return new Type(u8.buffer);
}
function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") {
    if (Number.isInteger(v)) return v.toLocaleString("en");
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(3) : v.toPrecision(4);
  }
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}
function kvTable(obj, skip) {
  const t = el("table", {class: "kv"});
  for (const [k, v] of Object.entries(obj || {})) {
    if (skip && skip.includes(k)) continue;
    if (v !== null && typeof v === "object" && !Array.isArray(v)) {
      for (const [k2, v2] of Object.entries(v)) {
        if (v2 !== null && typeof v2 === "object") continue;
        t.append(el("tr", {}, el("td", {text: `${k}.${k2}`}), el("td", {text: fmt(v2)})));
      }
    } else if (!Array.isArray(v)) {
      t.append(el("tr", {}, el("td", {text: k}), el("td", {text: fmt(v)})));
    }
  }
  return t;
}
function flatten(obj, skip) {  // {k: v, k.k2: v2} of the scalar entries, nested one level
  const out = new Map();
  for (const [k, v] of Object.entries(obj || {})) {
    if (skip && skip.includes(k)) continue;
    if (v !== null && typeof v === "object" && !Array.isArray(v)) {
      for (const [k2, v2] of Object.entries(v)) if (v2 === null || typeof v2 !== "object") out.set(`${k}.${k2}`, v2);
    } else if (!Array.isArray(v)) out.set(k, v);
  }
  return out;
}
function metricsTable(scores, evalResult) {
  // One row per metric: this report's rows beside eval.json's (each number shown once).
  const a = flatten(scores, ["firing_frequency_hist"]), b = flatten(evalResult);
  const keys = [...new Set([...a.keys(), ...b.keys()])];
  const cols = [scores && "on the report's rows", evalResult && "eval.json (wsae eval)"].filter(Boolean);
  const t = el("table", {class: "kv", id: "metrics"}, el("tr", {}, el("th"), cols.map(c => el("th", {text: c}))));
  for (const k of keys) {
    const cells = [];
    if (scores) cells.push(el("td", {text: a.has(k) ? fmt(a.get(k)) : ""}));
    if (evalResult) cells.push(el("td", {text: b.has(k) ? fmt(b.get(k)) : ""}));
    t.append(el("tr", {}, el("td", {text: k}), cells));
  }
  return t;
}
function tokenText(s) { return s.replace(/\n/g, "↵"); }

// -- charts (SVG) -----------------------------------------------------------------------------------
function axes(w, h, pad, xr, yr, xlabel, ylabel, logx, yint) {
  const g = svg("g");
  const X = v => pad.l + (w - pad.l - pad.r) * ((logx ? Math.log10(v) : v) - xr[0]) / (xr[1] - xr[0] || 1);
  const Y = v => h - pad.b - (h - pad.t - pad.b) * (v - yr[0]) / (yr[1] - yr[0] || 1);
  g.append(svg("line", {x1: pad.l, y1: h - pad.b, x2: w - pad.r, y2: h - pad.b, stroke: "#999"}));
  g.append(svg("line", {x1: pad.l, y1: pad.t, x2: pad.l, y2: h - pad.b, stroke: "#999"}));
  for (let i = 0; i <= 4; i++) {
    const yv = yr[0] + (yr[1] - yr[0]) * i / 4, xv = xr[0] + (xr[1] - xr[0]) * i / 4;
    const ty = svg("text", {x: pad.l - 4, y: Y(yv) + 3, "text-anchor": "end"});
    ty.textContent = yint ? String(Math.round(yv)) : fmt(+yv.toPrecision(3));
    const tx = svg("text", {x: X(logx ? 10 ** xv : xv), y: h - pad.b + 12, "text-anchor": "middle"});
    tx.textContent = logx ? `1e${xv.toFixed(1)}` : fmt(+xv.toPrecision(3));
    g.append(ty, tx);
  }
  const xl = svg("text", {x: (w + pad.l) / 2, y: h - 2, "text-anchor": "middle"});
  xl.textContent = xlabel;
  const yl = svg("text", {x: 4, y: pad.t - 10});  // above the top tick, not on it
  yl.textContent = ylabel;
  g.append(xl, yl);
  return {g, X, Y};
}
function range(vals) {
  const f = vals.filter(v => v !== null && isFinite(v));
  if (!f.length) return [0, 1];
  let lo = Math.min(...f), hi = Math.max(...f);
  if (lo > 0 && lo < 0.5 * hi) lo = 0;  // honest axes: from zero where it is near
  if (lo === hi) return lo === 0 ? [0, 1] : lo > 0 ? [0, 2 * hi] : [2 * lo, 0];
  return [lo, hi];
}
function lineChart(xs, ys, title, {w = 300, h = 170} = {}) {
  const pad = {l: 52, r: 10, t: 26, b: 28};
  const s = svg("svg", {width: w, height: h, class: "chart"});
  const a = axes(w, h, pad, range(xs), range(ys), "step", title);
  s.append(a.g);
  const pts = xs.map((x, i) => ys[i] === null ? null : `${a.X(x)},${a.Y(ys[i])}`).filter(Boolean);
  s.append(svg("polyline", {points: pts.join(" "), fill: "none", stroke: "#2563eb", "stroke-width": 1.5}));
  return s;
}
function barChart(values, title, {w = 360, h = 200, labels = null, highlight = -1, edges = null, counts = false} = {}) {
  // edges: the bins' boundaries (length values.length + 1), so the x ticks read in their units;
  // counts: integer values, so the y ticks are integers too.
  const pad = {l: 48, r: 22, t: 26, b: 28};  // r: room for the last x tick's label
  const s = svg("svg", {width: w, height: h, class: "chart"});
  const top = Math.max(...values, 1e-12);
  const yr = counts ? [0, Math.max(4, Math.ceil(top / 4) * 4)] : [0, top];
  const xr = edges ? [edges[0], edges[edges.length - 1]] : [0, values.length];
  const a = axes(w, h, pad, xr, yr, labels ? labels.x : "index", title, false, counts);
  s.append(a.g);
  const left = i => a.X(edges ? edges[i] : i), right = i => a.X(edges ? edges[i + 1] : i + 1);
  values.forEach((v, i) => {
    const r = svg("rect", {x: left(i), y: a.Y(v), width: Math.max(right(i) - left(i) - 1, 0.5), height: a.Y(0) - a.Y(v),
                           fill: i === highlight ? "#c2410c" : "#60a5fa"});
    const t = svg("title");
    t.textContent = labels ? labels.fmt(i, v) : `${i}: ${fmt(v)}`;
    r.append(t);
    s.append(r);
  });
  return s;
}

// -- layout: header, tabs, lazily built panels --------------------------------------------------------
const TABS = [["overview", "Overview", buildOverview]];
if (D.latents) TABS.push(["latents", `Latents (${D.latents.n.toLocaleString("en")})`, buildLatents]);
if (D.synthetic) TABS.push(["synthetic", "True features", buildSynthetic]);
if (D.sweep) TABS.push(["sweep", "Sweep", buildSweep]);
const built = {};

function show(id) {
  for (const [t] of TABS) {
    document.getElementById(`tab-${t}`).setAttribute("aria-selected", t === id ? "true" : "false");
    const p = document.getElementById(`panel-${t}`);
    if (p) p.classList.toggle("shown", t === id);
  }
  if (!built[id]) {
    const p = el("section", {class: "panel shown", id: `panel-${id}`, role: "tabpanel"});
    document.getElementById("main").append(p);
    TABS.find(t => t[0] === id)[2](p);
    built[id] = true;
  }
}

function buildHeader() {
  document.getElementById("header").append(el("h1", {text: D.title}), el("div", {class: "sub", text: D.subtitle || ""}));
  const nav = document.getElementById("tabs");
  for (const [id, label] of TABS)
    nav.append(el("button", {id: `tab-${id}`, role: "tab", "aria-selected": "false", onclick: () => show(id)}, label));
  document.getElementById("footer").textContent =
    `wsae-jax ${D.version} · self-contained page: no request leaves it.`;
}

// -- overview -----------------------------------------------------------------------------------------
function buildOverview(p) {
  for (const n of D.notes || []) p.append(el("div", {class: "note", text: n}));
  const grid = el("div", {class: "grid"});
  grid.append(el("div", {class: "card"}, el("h3", {text: "Configuration"}), kvTable(D.config)));
  if (D.scores || D.eval) {
    const c = el("div", {class: "card"}, el("h3", {text: "Metrics"}));
    c.append(metricsTable(D.scores, D.eval));
    grid.append(c);
  }
  if (D.curves) {
    const c = el("div", {class: "card", id: "curves"}, el("h3", {text: "Training curves"}));
    for (const [k, v] of Object.entries(D.curves)) if (k !== "step") c.append(lineChart(D.curves.step, v, k));
    grid.append(c);
  }
  if (D.gamma) {
    const c = el("div", {class: "card", id: "gamma"}, el("h3", {text: "γ per input dimension"}));
    if (D.gamma.description) c.append(el("div", {class: "muted", text: `schedule: ${JSON.stringify(D.gamma.description)}`}));
    if (D.gamma.values) {
      c.append(el("div", {text: D.gamma.summary}));
      c.append(barChart(D.gamma.values, "γ", {labels: {x: "input dimension", fmt: (i, v) => `dim ${i}: γ = ${fmt(v)}`}, highlight: D.gamma.top_dim}));
    }
    grid.append(c);
  }
  const hist = D.scores && D.scores.firing_frequency_hist;
  if (hist) {
    const e = hist.log10_edges;
    const c = el("div", {class: "card", id: "density"}, el("h3", {text: "Latent density (log10 firing frequency)"}),
                 el("div", {class: "muted", text: `${hist.dead} dead latents not shown`}));
    c.append(barChart(hist.counts, "latents", {edges: e, counts: true, labels: {x: "log10 firing frequency", fmt: (i, v) => `[${e[i].toFixed(2)}, ${e[i + 1].toFixed(2)}): ${v} latents`}}));
    grid.append(c);
  }
  p.append(grid);
}

// -- latents: table and detail --------------------------------------------------------------------------
const L = D.latents;
let CTX = null, NB = null;
function contexts() {  // decoded on first use
  if (!CTX && D.contexts) {
    const c = D.contexts;
    CTX = {tokens: b64(c.tokens, Uint32Array), rows: b64(c.rows, Int32Array), bands: b64(c.bands, Int8Array),
           acts: b64(c.acts, Uint8Array), E: c.examples, W: c.before + 1 + c.after};
  }
  return CTX;
}
let HIST = null, LOGITS = null, CLASSES = null;  // every latent's activation histogram, decoded on first use
function neighbours() {
  if (!NB) NB = {ids: b64(L.neighbours, Int32Array), cos: b64(L.neighbour_cos, Int8Array), k: L.k_neighbours};
  return NB;
}
function topTokens(j) {
  return L.top_tokens ? L.top_tokens[j].map(([t, n]) => `${JSON.stringify(t)}×${n}`).join(" ") : "";
}
const COLS = [["latent", j => j]];
if (L && !L.unscored) COLS.push(["frequency", j => L.frequency[j]], ["mean", j => L.mean[j]], ["max", j => L.max[j]]);
if (L && L.top_tokens) COLS.push(["top tokens", topTokens]);
if (D.synthetic) COLS.push(["true feature", j => D.synthetic.feature_of_latent[j] >= 0 ? D.synthetic.feature_of_latent[j] : ""],
                           ["best cos", j => D.synthetic.latent_cos[j]]);
if (L && L.probe.some(Boolean)) COLS.push(["probes", j => L.probe[j]]);
if (L && L.absorption.some(Boolean)) COLS.push(["absorption", j => L.absorption[j]]);
const PAGE_SIZE = 100;
const state = {sort: L && !L.unscored ? 1 : 0, desc: L && !L.unscored, query: "", page: 0, order: null, selected: -1};

function latentOrder() {
  const n = L.n, q = state.query.trim().toLowerCase();
  let ids = Array.from({length: n}, (_, j) => j);
  if (q) ids = ids.filter(j => COLS.some(([, f]) => String(f(j)).toLowerCase().includes(q)));
  const f = COLS[state.sort][1];
  ids.sort((a, b) => {
    const va = f(a), vb = f(b);
    const c = typeof va === "number" && typeof vb === "number" ? va - vb : String(va).localeCompare(String(vb));
    return state.desc ? -c || a - b : c || a - b;
  });
  return ids;
}
function renderTable() {
  state.order = latentOrder();
  const pages = Math.max(1, Math.ceil(state.order.length / PAGE_SIZE));
  state.page = Math.min(state.page, pages - 1);
  const head = el("tr", {}, COLS.map(([name], i) => el("th", {
    class: i === state.sort ? (state.desc ? "sorted-desc" : "sorted-asc") : "",
    onclick: () => { state.desc = state.sort === i ? !state.desc : i !== 0; state.sort = i; state.page = 0; renderTable(); }}, name)));
  const body = el("tbody");
  for (const j of state.order.slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE)) {
    body.append(el("tr", {class: "latent-row" + (j === state.selected ? " selected" : ""), id: `row-${j}`, "data-latent": j,
                          tabindex: 0, onclick: () => openLatent(j), onkeydown: ev => { if (ev.key === "Enter") openLatent(j); }}, COLS.map(([, f], i) => el("td", {text: i === 0 ? String(j) : fmt(f(j))}))));
  }
  const t = document.getElementById("latent-table");
  t.replaceChildren(el("thead", {}, head), body);
  document.getElementById("page-info").textContent =
    `${state.order.length.toLocaleString("en")} latents · page ${state.page + 1} of ${pages}`;
}
function buildLatents(p) {
  if (L.unscored) p.append(el("div", {class: "note", text: "frequency, mean and max activation: not measured (no activations given; pass --activations STORE)."}));
  const search = el("input", {id: "latent-search", type: "search", placeholder: "search: latent id, token, class…"});
  let timer = null;
  search.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => { state.query = search.value; state.page = 0; renderTable(); }, 120); });
  const controls = el("div", {class: "controls"}, search,
    el("button", {id: "prev-page", onclick: () => { state.page = Math.max(0, state.page - 1); renderTable(); }}, "◀"),
    el("button", {id: "next-page", onclick: () => { state.page += 1; renderTable(); }}, "▶"),
    el("span", {id: "page-info", class: "muted"}));
  p.append(el("div", {class: "latents"},
    el("div", {}, controls, el("div", {class: "tablebox"}, el("table", {class: "data", id: "latent-table"}))),
    el("div", {class: "card", id: "latent-detail"}, el("div", {class: "muted", text: "Click a latent to see its contexts and neighbours."}))));
  renderTable();
}
function latentLink(j, label) {
  return el("a", {class: "latent-link", "data-latent": j, onclick: () => openLatent(j)}, label || `#${j}`);
}
function openLatent(j) {
  show("latents");
  state.selected = j;
  for (const r of document.querySelectorAll("tr.selected")) r.classList.remove("selected");
  const row = document.getElementById(`row-${j}`);
  if (row) row.classList.add("selected");
  const d = document.getElementById("latent-detail");
  const kids = [el("h2", {text: `Latent ${j}`})];
  if (!L.unscored)
    kids.push(el("div", {}, `active on ${fmt(L.count[j])} rows (frequency ${fmt(L.frequency[j])}), mean ${fmt(L.mean[j])}, max ${fmt(L.max[j])}`));
  const tags = [];
  if (L.probe[j]) tags.push(el("span", {class: "tag", text: `probe: ${L.probe[j]}`}));
  if (L.absorption[j]) tags.push(el("span", {class: "tag", text: `absorption: ${L.absorption[j]}`}));
  if (L.top_tokens && L.top_tokens[j].length) tags.push(el("span", {class: "tag", text: `top tokens: ${topTokens(j)}`}));
  if (tags.length) kids.push(el("div", {}, tags));
  if (L.classes) {
    const C = L.classes, nC = C.names.length;
    if (!CLASSES) CLASSES = b64(C.density, Float32Array);
    const t = el("table", {class: "kv", id: "class-density"},
      el("tr", {}, ["token class", "rows", "density here", "× overall"].map(h => el("th", {text: h}))));
    C.names.forEach((name, c) => {
      const d = CLASSES[j * nC + c], all = L.frequency[j];
      t.append(el("tr", {}, el("td", {text: name}), el("td", {text: fmt(C.rows[c])}),
                    el("td", {text: fmt(+d.toPrecision(3))}), el("td", {text: all > 0 ? fmt(+(d / all).toPrecision(3)) : "–"})));
    });
    kids.push(el("div", {}, el("h3", {text: "Activation density per token class"}), t));
  }
  if (L.logits) {
    const g = L.logits, k = g.k;
    if (!LOGITS) LOGITS = {pi: b64(g.promote_ids, Int32Array), pv: b64(g.promote, Float32Array),
                           si: b64(g.suppress_ids, Int32Array), sv: b64(g.suppress, Float32Array)};
    const list = (ids, vals) => Array.from({length: k}, (_, i) => `${JSON.stringify(tokenText(g.vocab[ids[j * k + i]] || `#${ids[j * k + i]}`))} ${vals[j * k + i] >= 0 ? "+" : ""}${vals[j * k + i].toFixed(2)}`).join("  ");
    kids.push(el("div", {id: "logit-effects"}, el("h3", {text: "Logit effects"}),
      el("div", {class: "muted", text: g.formula}),
      el("div", {class: "promotes"}, "promotes: ", list(LOGITS.pi, LOGITS.pv)),
      el("div", {class: "suppresses"}, "suppresses: ", list(LOGITS.si, LOGITS.sv))));
  }
  if (D.synthetic) {
    const s = D.synthetic, f = s.feature_of_latent[j];
    kids.push(el("div", {}, f >= 0 ? `decoder matched to true feature ${f}` : "decoder matched to no true feature",
                 `; closest feature ${s.best_feature[j]} at cos ${fmt(s.latent_cos[j])}`));
  }
  if (!L.unscored && L.act_hist && L.count[j] > 0) {
    if (!HIST) HIST = b64(L.act_hist, Uint32Array);
    const nB = L.act_hist_bins, counts = Array.from(HIST.slice(j * nB, (j + 1) * nB));
    const edges = Array.from({length: nB + 1}, (_, i) => L.max[j] * i / nB);
    const h = el("div", {id: "act-hist"}, el("h3", {text: "Activation histogram (active rows)"}));
    h.append(barChart(counts, "rows", {w: 420, h: 170, edges, counts: true, labels: {x: "activation",
      fmt: (i, v) => `[${fmt(+edges[i].toPrecision(3))}, ${fmt(+edges[i + 1].toPrecision(3))}): ${v} rows`}}));
    kids.push(h);
  }
  const nb = neighbours();
  const nbList = el("div", {class: "neighbours"});
  for (let i = 0; i < nb.k; i++) {
    const o = j * nb.k + i;
    nbList.append(latentLink(nb.ids[o]), el("span", {class: "muted", text: ` cos ${(nb.cos[o] / 127).toFixed(2)}   `}));
  }
  kids.push(el("h3", {text: "Nearest decoder directions"}), nbList);
  const c = contexts();
  if (c) kids.push(...contextBlocks(j, c));
  d.replaceChildren(...kids);
  if (location.hash !== `#latent-${j}`) history.replaceState(null, "", `#latent-${j}`);
}
function contextBlocks(j, c) {
  const meta = D.contexts, vocab = meta.vocab, peak = meta.peak[j];
  const groups = new Map();
  for (let e = 0; e < c.E; e++) {
    const o = j * c.E + e, row = c.rows[o];
    if (row < 0) continue;
    const band = c.bands[o];
    if (!groups.has(band)) groups.set(band, []);
    groups.get(band).push(e);
  }
  if (!groups.size) return [el("div", {class: "muted", text: "never active on these rows."})];
  const out = [];
  const nb = meta.n_bands;  // top rows (band 0), then the bands from the highest down
  for (const band of [0, ...Array.from({length: nb}, (_, i) => nb - i)].filter(b => groups.has(b))) {
    const title = band === 0 ? "Top activations" :
      `Activations in (${Math.round(100 * (band - 1) / nb)}%, ${Math.round(100 * band / nb)}%] of the maximum`;
    const box = el("div", {class: "ctx-group", "data-band": band}, el("h3", {text: title}));
    for (const e of groups.get(band)) box.append(contextLine(j, e, c, meta, vocab, peak));
    out.push(box);
  }
  return out;
}
function contextLine(j, e, c, meta, vocab, peak) {
  const o = j * c.E + e, row = c.rows[o];
  const line = el("div", {class: "ctx", "data-row": row});
  const hitAct = c.acts[o * c.W + meta.before] / 255 * peak;
  line.append(el("span", {class: "act", text: fmt(+hitAct.toPrecision(3))}));
  for (let w = 0; w < c.W; w++) {
    const pos = row - meta.before + w;
    if (pos < 0 || pos >= c.tokens.length || Math.floor(pos / meta.context_len) !== Math.floor(row / meta.context_len)) continue;
    const q = c.acts[o * c.W + w];
    const t = c.tokens[pos];
    const span = el("span", {class: "tok" + (w === meta.before ? " hit" : "") + (meta.decoded ? "" : " undecoded"), text: tokenText(vocab[t] !== undefined ? vocab[t] : `#${t}`),
                             title: `token ${t}: activation ${fmt(+(q / 255 * peak).toPrecision(3))}`});
    if (q > 0) span.style.background = `rgba(var(--hit), ${(0.12 + 0.78 * q / 255).toFixed(3)})`;
    line.append(span);
  }
  return line;
}

// -- synthetic runs: true features and the closed form ---------------------------------------------------
function buildSynthetic(p) {
  const s = D.synthetic;
  p.append(el("div", {}, `${s.n_features} true features; MMCS (mean over features of the best signed cos with a decoder row) ${fmt(s.mmcs)}`));
  if (s.closed_form_note) p.append(el("div", {class: "note", id: "closed-form-note", text: s.closed_form_note}));
  if (s.closed_form) {
    const cf = s.closed_form;
    p.append(el("h2", {text: "Closed form vs the trained encoder"}), el("div", {class: "note", text: cf.verdict}));
    const t = el("table", {class: "data", id: "closed-form"},
      el("tr", {}, ["", "L_SAE", "L_GT (encoder matching, raw latents)"].map(h => el("th", {text: h}))),
      el("tr", {}, el("td", {text: "closed form"}), el("td", {text: fmt(cf.closed_form.l_sae)}), el("td", {text: fmt(cf.closed_form.l_gt)})),
      el("tr", {}, el("td", {text: "trained"}), el("td", {text: fmt(cf.trained.l_sae)}), el("td", {text: fmt(cf.trained.l_gt)})));
    p.append(t);
    const f = el("table", {class: "data"}, el("tr", {}, ["true feature", "matched latent (by encoder)", "encoder cos", "decoder cos", "encoder scale (closed form: 1)"].map(h => el("th", {text: h}))));
    cf.encoder_cos.forEach((v, i) => f.append(el("tr", {}, el("td", {text: i}),
      el("td", {}, cf.latent_of_feature[i] >= 0 ? latentLink(cf.latent_of_feature[i]) : "–"),
      el("td", {text: fmt(v)}), el("td", {text: fmt(cf.decoder_cos[i])}), el("td", {text: fmt(cf.scale[i])}))));
    p.append(el("h3", {text: "Per true feature"}), f);
  }
  const m = D.latents.n, n = s.n_features;
  if (m * n <= 60000) p.append(cosMap(s, m, n));
}
function cosMap(s, m, n) {
  // Signed cos of decoder rows (rows, in the matching's order) with true features (columns):
  // orange for +, blue for −; a perfect SAE is an orange diagonal over its first n rows.
  const cos = b64(s.cos, Int8Array), cell = Math.max(2, Math.min(14, Math.floor(560 / n)));
  const pad = {l: 64, t: 30, r: 70, b: 8}, W = n * cell, H = m * cell;
  const g = svg("svg", {width: pad.l + W + pad.r, height: pad.t + H + pad.b, id: "cos-map"});
  const colour = v => v >= 0 ? `rgba(194,65,12,${(v / 127).toFixed(3)})` : `rgba(37,99,235,${(-v / 127).toFixed(3)})`;
  s.row_order.forEach((lat, r) => {
    for (let b = 0; b < n; b++) {
      const v = cos[lat * n + b];
      if (Math.abs(v) < 4) continue;
      const rect = svg("rect", {x: pad.l + b * cell, y: pad.t + r * cell, width: cell, height: cell, fill: colour(v)});
      const t = svg("title"); t.textContent = `latent ${lat}, feature ${b}: cos ${(v / 127).toFixed(2)}`; rect.append(t);
      g.append(rect);
    }
  });
  g.append(svg("rect", {x: pad.l, y: pad.t, width: W, height: H, fill: "none", stroke: "#999"}));
  if (s.n_matched < m) g.append(svg("line", {x1: pad.l, x2: pad.l + W, y1: pad.t + s.n_matched * cell, y2: pad.t + s.n_matched * cell, stroke: "#666", "stroke-dasharray": "3 2"}));
  const step = Math.max(1, Math.ceil(n / 10));
  for (let b = 0; b < n; b += step) {
    const t = svg("text", {x: pad.l + (b + 0.5) * cell, y: pad.t - 4, "text-anchor": "middle", class: "x-tick"}); t.textContent = b; g.append(t);
  }
  const xl = svg("text", {x: pad.l + W / 2, y: 10, "text-anchor": "middle"}); xl.textContent = "true feature"; g.append(xl);
  const yl = svg("text", {x: 12, y: pad.t + H / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${pad.t + H / 2})`});
  yl.textContent = `latents (matched ${s.n_matched}, then the rest)`; g.append(yl);
  // colour scale, −1 … 1
  const sx = pad.l + W + 24, sh = Math.min(H, 160);
  for (let i = 0; i < 20; i++) {
    const v = 127 - i * 254 / 19;
    g.append(svg("rect", {x: sx, y: pad.t + i * sh / 20, width: 12, height: sh / 20 + 0.5, fill: colour(v), class: "scale"}));
  }
  [["1", 0], ["0", sh / 2], ["−1", sh]].forEach(([label, y]) => {
    const t = svg("text", {x: sx + 16, y: pad.t + y + 4, class: "scale-tick"}); t.textContent = label; g.append(t);
  });
  return el("div", {}, el("h3", {text: "cos of decoder rows with the true features, sorted by the matching"}), g);
}

// -- sweeps ----------------------------------------------------------------------------------------------
function buildSweep(p) {
  const s = D.sweep, xi = s.columns.indexOf(s.x), yi = s.columns.indexOf(s.y);
  const front = new Set(s.front);
  const kinds = [...new Set(s.weighting)];
  const colour = k => `hsl(${Math.round(360 * kinds.indexOf(k) / Math.max(kinds.length, 1))}, 65%, 45%)`;
  const box = el("div", {id: "hover-box"});
  p.append(el("h2", {text: `Members in (${s.x}, ${s.y}), one Pareto front per data setting`}));
  p.append(el("div", {class: "legend"}, kinds.map(k => el("span", {class: "key"},
    el("span", {class: "swatch", style: `background:${colour(k)}`}), k))));
  const charts = el("div", {class: "grid"});
  s.settings.forEach((set, gi) => {
    const w = s.settings.length > 1 ? 420 : 560, h = s.settings.length > 1 ? 300 : 360;
    const pad = {l: 58, r: 14, t: 26, b: 30};
    const xs = set.members.map(i => s.rows[i][xi]), ys = set.members.map(i => s.rows[i][yi]);
    const a = axes(w, h, pad, range(xs), range(ys), s.x, s.y);
    const g = svg("svg", {width: w, height: h, class: "pareto", id: gi === 0 ? "pareto" : `pareto-${gi}`, "data-setting": set.label}, a.g);
    g.append(svg("polyline", {class: "front", points: set.front.map(i => `${a.X(s.rows[i][xi])},${a.Y(s.rows[i][yi])}`).join(" ")}));
    set.members.forEach(i => {
      const r = s.rows[i];
      if (r[xi] === null || r[yi] === null) return;
      const c = svg("circle", {cx: a.X(r[xi]), cy: a.Y(r[yi]), r: front.has(i) ? 5 : 4, fill: colour(s.weighting[i]),
                               class: "member" + (front.has(i) ? " on-front" : ""), "data-member": i});
      const text = s.columns.map((k, q) => `${k}: ${fmt(r[q])}`).join("\n");
      const t = svg("title"); t.textContent = text; c.append(t);
      c.addEventListener("mousemove", ev => { box.textContent = `member ${i}${front.has(i) ? " (Pareto front)" : ""} · ${s.weighting[i]}\n${text}`;
        box.style.display = "block"; box.style.left = `${ev.clientX + 14}px`; box.style.top = `${ev.clientY + 10}px`; });
      c.addEventListener("mouseleave", () => { box.style.display = "none"; });
      g.append(c);
    });
    charts.append(el("div", {class: "card"}, el("h3", {text: set.label}), g));
  });
  p.append(charts, box);
  const table = el("table", {class: "data", id: "sweep-table"});
  let sortCol = -1, desc = false;
  const render = () => {
    const order = s.rows.map((_, i) => i);
    if (sortCol >= 0) order.sort((a2, b2) => { const va = s.rows[a2][sortCol], vb = s.rows[b2][sortCol];
      const c = typeof va === "number" && typeof vb === "number" ? va - vb : String(va).localeCompare(String(vb)); return desc ? -c : c; });
    table.replaceChildren(el("tr", {}, el("th", {text: "member"}), s.columns.map((k, q) => el("th", {
      class: q === sortCol ? (desc ? "sorted-desc" : "sorted-asc") : "",
      onclick: () => { desc = sortCol === q ? !desc : false; sortCol = q; render(); }}, k))),
      ...order.map(i => el("tr", {class: front.has(i) ? "selected" : ""}, el("td", {text: i}), s.rows[i].map(v => el("td", {text: fmt(v)})))));
  };
  render();
  p.append(el("h2", {text: "Members"}), el("div", {class: "tablebox"}, table));
}

// -- start ---------------------------------------------------------------------------------------------
buildHeader();
const m = /^#latent-(\d+)$/.exec(location.hash);
if (m && L && +m[1] < L.n) { show("latents"); openLatent(+m[1]); }
else show("overview");
