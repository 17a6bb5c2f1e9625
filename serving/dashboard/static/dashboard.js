// oihedge dashboard: the Live page's refresh, the Timeline's and the Backtest's charts (Plotly.js).
"use strict";

function refreshLive(panel) {
  const every = 1000 * Number(panel.dataset.refreshSeconds || 5);
  const note = document.getElementById("refresh-state");
  async function tick() {
    try {
      const response = await fetch("/live/panel", { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      panel.innerHTML = await response.text();
      note.textContent = `updated ${new Date().toISOString().slice(11, 19)} UTC`;
      note.className = "";
    } catch (err) {
      note.textContent = `refresh failed: ${err.message}`;
      note.className = "warn";
    }
    setTimeout(tick, every);
  }
  setTimeout(tick, every);
}

const TIER_COLOURS = {
  early: "rgba(255, 214, 0, 0.18)",
  elevated: "rgba(255, 140, 0, 0.20)",
  high: "rgba(255, 80, 0, 0.22)",
  full: "rgba(220, 0, 0, 0.22)",
  vol_target: "rgba(70, 120, 255, 0.15)",
};

// one stacked panel per entry, top to bottom, on one time axis
function panels(s) {
  const m = s.market || null;
  const out = [];
  // the mark each decision used when the log has it, else the panel's median close
  const price = s.price ? { ts: s.ts, usd: s.price } : (m && m.price.ts.length ? m.price : null);
  if (price) {
    out.push({
      title: "price (USD)",
      traces: [{ x: price.ts, y: price.usd, name: "price", mode: "lines", line: { color: "#333" } }],
      bands: (m ? m.cascades : []).map((c) => ({ start: c.start, end: c.end, colour: "rgba(90,90,90,0.25)" })),
    });
  }
  out.push({
    title: "cascade probability (0-1)",
    traces: [
      { x: s.ts, y: s.probability, name: "probability", mode: "lines", line: { color: "#6a3d9a" } },
      { x: s.ts, y: s.p_entry, name: "p entry", mode: "lines", line: { color: "#d62728", dash: "dash", width: 1 } },
      { x: s.ts, y: s.p_exit, name: "p exit", mode: "lines", line: { color: "#2ca02c", dash: "dot", width: 1 } },
    ],
    bands: s.bands.map((b) => ({ start: b.start, end: b.end, colour: TIER_COLOURS[b.tier] || "rgba(128,128,128,0.15)" })),
  });
  const hedge = [
    { x: s.ts, y: s.target_fraction, name: "target", mode: "lines", line: { color: "#ff7f0e", shape: "hv" } },
    { x: s.ts, y: s.hedge_fraction, name: "hedge held", mode: "lines", line: { color: "#1f77b4", shape: "hv" } },
  ];
  for (const side of ["sell", "buy"]) {
    const orders = s.orders.filter((o) => o.side === side);
    if (!orders.length) continue;
    hedge.push({
      x: orders.map((o) => o.ts), y: orders.map((o) => o.hedge_fraction),
      text: orders.map((o) => `${o.side} $${Math.round(o.notional_usd).toLocaleString()} ${o.status}`),
      name: `${side} orders`, mode: "markers", hoverinfo: "text+x",
      marker: { symbol: side === "sell" ? "triangle-up" : "triangle-down", size: 10,
                color: side === "sell" ? "#d62728" : "#2ca02c" },
    });
  }
  out.push({ title: "hedge (fraction of max)", traces: hedge, bands: [] });
  if (m && Object.keys(m.oi).length) {
    out.push({
      title: "open interest (USD)",
      traces: Object.entries(m.oi).map(([venue, v]) => ({ x: v.ts, y: v.value, name: `OI ${venue}`, mode: "lines" })),
      bands: [],
    });
  }
  if (m && Object.keys(m.funding).length) {
    out.push({
      title: "funding rate (% per interval)",
      traces: Object.entries(m.funding).map(([venue, v]) => ({
        x: v.ts, y: v.value.map((r) => 100 * r), name: `funding ${venue}`, mode: "lines", line: { shape: "hv" },
      })),
      bands: [],
    });
  }
  return out;
}

function drawSymbol(div, s) {
  const stack = panels(s);
  const gap = 0.04;
  const size = (1 - gap * (stack.length - 1)) / stack.length;
  const traces = [];
  const shapes = [];
  const layout = {
    height: 150 + 210 * stack.length, margin: { l: 80, r: 20, t: 10, b: 50 },
    hovermode: "x unified", legend: { orientation: "h", y: -0.08 },
  };
  stack.forEach((panel, i) => {
    const axis = i === 0 ? "y" : `y${i + 1}`;
    const top = 1 - i * (size + gap);
    layout[i === 0 ? "yaxis" : `yaxis${i + 1}`] = {
      title: { text: panel.title }, domain: [Math.max(0, top - size), top], anchor: "x",
    };
    for (const t of panel.traces) traces.push({ ...t, yaxis: axis });
    for (const b of panel.bands) {
      shapes.push({
        type: "rect", xref: "x", yref: `${axis} domain`, x0: b.start, x1: b.end, y0: 0, y1: 1,
        fillcolor: b.colour, line: { width: 0 }, layer: "below",
      });
    }
  });
  layout.xaxis = { title: { text: "time (UTC)" }, type: "date", anchor: `y${stack.length === 1 ? "" : stack.length}` };
  layout.shapes = shapes;
  Plotly.newPlot(div, traces, layout, { responsive: true, displaylogo: false });
}

function drawTimeline() {
  const series = JSON.parse(document.getElementById("timeline-data").textContent);
  for (const div of document.querySelectorAll(".chart")) {
    drawSymbol(div, series[div.dataset.symbol]);
  }
}

// -- the Backtest page: frontier, equity in USD with the cascades, hedge per symbol ----

const POLICY_STYLES = {
  no_hedge: { color: "#000000", width: 1.2 },
  model: { color: "#d62728", width: 2.2 },
  static_matched: { color: "#7f7f7f", width: 1.4, dash: "dash" },
  vol_target_matched: { color: "#1f77b4", width: 1.4, dash: "dashdot" },
  fixed_rule: { color: "#2ca02c", width: 1.2, dash: "dot" },
};
const FAMILY_STYLES = {
  static: { color: "#7f7f7f", symbol: "circle" },
  "vol target": { color: "#1f77b4", symbol: "square" },
  "model (risk budgets)": { color: "#d62728", symbol: "star" },
};
const SYMBOL_COLOURS = ["#9467bd", "#ff7f0e", "#2ca02c", "#8c564b", "#e377c2", "#bcbd22"];
const PLOT_CONFIG = { responsive: true, displaylogo: false };

function drawFrontier(div, traces) {
  const data = [];
  for (const [axis, key] of [["", "worst"], ["2", "cvar"]]) {
    for (const t of traces) {
      const family = FAMILY_STYLES[t.name];
      data.push({
        x: t.x, y: t[key], name: t.name, legendgroup: t.name, showlegend: axis === "",
        mode: t.line ? "lines+markers" : "markers+text", text: t.line ? t.policies : [t.name],
        textposition: "top right", hovertext: t.policies, hoverinfo: "text+x+y",
        xaxis: `x${axis}`, yaxis: `y${axis}`,
        line: family ? { color: family.color } : undefined,
        // the model at its default budget stands out on its family's line
        marker: { size: t.policies.map((p) => (p === "model" ? 18 : t.line ? 8 : 11)),
                  symbol: t.policies.map((p) => (p === "model" ? "star" : family ? family.symbol : "diamond")),
                  color: family ? family.color : (POLICY_STYLES[t.name] || {}).color },
      });
    }
  }
  Plotly.newPlot(div, data, {
    height: 520, margin: { l: 80, r: 20, t: 30, b: 60 }, grid: { rows: 1, columns: 2, pattern: "independent" },
    xaxis: { title: { text: "mean hedge ratio (% of long value)" } },
    yaxis: { title: { text: "worst 24 h loss (% of portfolio)" } },
    xaxis2: { title: { text: "mean hedge ratio (% of long value)" } },
    yaxis2: { title: { text: "CVaR 95 % of daily returns (% of portfolio)" } },
    legend: { orientation: "h", y: -0.18 },
  }, PLOT_CONFIG);
}

// the page's JSON has its keys sorted: put the policies back in the report's order
function ordered(byPolicy) {
  const first = Object.keys(POLICY_STYLES).filter((p) => p in byPolicy);
  return [...first, ...Object.keys(byPolicy).filter((p) => !first.includes(p))].map((p) => [p, byPolicy[p]]);
}

function symbolColours(cascades) {
  const names = [...new Set(cascades.map((c) => c.symbol))];
  return Object.fromEntries(names.map((s, i) => [s, SYMBOL_COLOURS[i % SYMBOL_COLOURS.length]]));
}

function cascadeShapes(cascades, colours, yref) {
  return cascades.map((c) => ({
    type: "rect", xref: "x", yref, x0: c.start, x1: c.end, y0: 0, y1: 1, layer: "below",
    fillcolor: colours[c.symbol], opacity: 0.3, line: { width: 1, color: colours[c.symbol] },
  }));
}

function drawEquity(div, charts) {
  const data = [];
  for (const [name, e] of ordered(charts.equity)) {
    const line = POLICY_STYLES[name] || { width: 1.2 };
    data.push({ x: e.ts, y: e.usd, name, legendgroup: name, mode: "lines", line, yaxis: "y" });
    data.push({ x: e.ts, y: e.drawdown_pct, name, legendgroup: name, showlegend: false,
                mode: "lines", line, yaxis: "y2" });
  }
  const colours = symbolColours(charts.cascades);
  for (const [symbol, colour] of Object.entries(colours)) {
    const hits = charts.cascades.filter((c) => c.symbol === symbol);
    data.push({
      x: hits.map((c) => c.start), y: hits.map((c) => c.usd), name: `cascade ${symbol} (${hits.length})`,
      mode: "markers", marker: { symbol: "triangle-down", size: 11, color: colour }, yaxis: "y",
      text: hits.map((c) => `${symbol} cascade ${c.start} .. ${c.end}`), hoverinfo: "text",
    });
  }
  const shapes = [...cascadeShapes(charts.cascades, colours, "y domain"),
                  ...cascadeShapes(charts.cascades, colours, "y2 domain")];
  Plotly.newPlot(div, data, {
    height: 620, margin: { l: 100, r: 20, t: 20, b: 60 }, hovermode: "x unified", shapes,
    xaxis: { title: { text: "time (UTC)" }, type: "date", anchor: "y2" },
    yaxis: { title: { text: "portfolio value (USD)" }, tickprefix: "$", domain: [0.36, 1] },
    yaxis2: { title: { text: "drawdown (% below peak)" }, domain: [0, 0.3], anchor: "x" },
    legend: { orientation: "h", y: -0.12 },
  }, PLOT_CONFIG);
}

function drawHedge(div, symbol, charts) {
  const s = charts.hedge[symbol];
  const data = ordered(s.policies).map(([name, ratio]) => ({
    x: s.ts, y: ratio, name, mode: "lines", line: { ...(POLICY_STYLES[name] || {}), shape: "hv" },
  }));
  const colours = symbolColours(charts.cascades);
  const mine = charts.cascades.filter((c) => c.symbol === symbol);
  const shapes = [
    ...s.bands.map((b) => ({
      type: "rect", xref: "x", yref: "y domain", x0: b.start, x1: b.end, y0: 0, y1: 1, layer: "below",
      fillcolor: TIER_COLOURS[b.tier] || "rgba(128,128,128,0.15)", line: { width: 0 },
    })),
    ...cascadeShapes(mine, colours, "y domain"),
  ];
  Plotly.newPlot(div, data, {
    height: 320, margin: { l: 80, r: 20, t: 10, b: 50 }, hovermode: "x unified", shapes,
    xaxis: { title: { text: "time (UTC)" }, type: "date" },
    yaxis: { title: { text: "hedge (short / long value)" }, range: [-0.02, 1.05] },
    legend: { orientation: "h", y: -0.25 },
  }, PLOT_CONFIG);
}

function drawBacktest() {
  const charts = JSON.parse(document.getElementById("backtest-data").textContent);
  if (charts.frontier.length) drawFrontier(document.getElementById("chart-frontier"), charts.frontier);
  if (Object.keys(charts.equity).length) drawEquity(document.getElementById("chart-equity"), charts);
  for (const div of document.querySelectorAll(".hedge-chart")) drawHedge(div, div.dataset.symbol, charts);
}

document.addEventListener("DOMContentLoaded", () => {
  const panel = document.getElementById("live-panel");
  if (panel) refreshLive(panel);
  if (document.getElementById("timeline-data")) drawTimeline();
  if (document.getElementById("backtest-data")) drawBacktest();
});
