// oihedge dashboard: the Live page's refresh and the Timeline's charts (Plotly.js).
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

document.addEventListener("DOMContentLoaded", () => {
  const panel = document.getElementById("live-panel");
  if (panel) refreshLive(panel);
  if (document.getElementById("timeline-data")) drawTimeline();
});
