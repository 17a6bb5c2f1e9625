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

function drawSymbol(div, s) {
  const hasPrice = Array.isArray(s.price);
  // stacked panels on one time axis: [price], probability, hedge fraction
  const domains = hasPrice ? [[0.68, 1], [0.36, 0.64], [0, 0.32]] : [[0.52, 1], [0, 0.48]];
  const [priceAxis, pAxis, hAxis] = hasPrice ? ["y", "y2", "y3"] : [null, "y", "y2"];
  const traces = [];
  if (hasPrice) {
    traces.push({ x: s.ts, y: s.price, name: "price", yaxis: priceAxis, mode: "lines",
                  line: { color: "#333" } });
  }
  traces.push(
    { x: s.ts, y: s.probability, name: "probability", yaxis: pAxis, mode: "lines",
      line: { color: "#6a3d9a" } },
    { x: s.ts, y: s.p_entry, name: "p entry", yaxis: pAxis, mode: "lines",
      line: { color: "#d62728", dash: "dash", width: 1 } },
    { x: s.ts, y: s.p_exit, name: "p exit", yaxis: pAxis, mode: "lines",
      line: { color: "#2ca02c", dash: "dot", width: 1 } },
    { x: s.ts, y: s.target_fraction, name: "target", yaxis: hAxis, mode: "lines",
      line: { color: "#ff7f0e", shape: "hv" } },
    { x: s.ts, y: s.hedge_fraction, name: "hedge held", yaxis: hAxis, mode: "lines",
      line: { color: "#1f77b4", shape: "hv" } },
  );
  for (const side of ["sell", "buy"]) {
    const orders = s.orders.filter((o) => o.side === side);
    if (!orders.length) continue;
    traces.push({
      x: orders.map((o) => o.ts), y: orders.map((o) => o.hedge_fraction),
      text: orders.map((o) => `${o.side} $${Math.round(o.notional_usd).toLocaleString()} ${o.status}`),
      name: `${side} orders`, yaxis: hAxis, mode: "markers", hoverinfo: "text+x",
      marker: { symbol: side === "sell" ? "triangle-up" : "triangle-down", size: 10,
                color: side === "sell" ? "#d62728" : "#2ca02c" },
    });
  }
  const axisKey = (a) => (a === "y" ? "yaxis" : `yaxis${a.slice(1)}`);
  const layout = {
    height: hasPrice ? 640 : 520, margin: { l: 70, r: 20, t: 10, b: 50 },
    hovermode: "x unified", legend: { orientation: "h", y: -0.12 },
    xaxis: { title: { text: "time (UTC)" }, type: "date", anchor: hAxis },
    shapes: s.bands.map((b) => ({
      type: "rect", xref: "x", yref: `${pAxis} domain`, x0: b.start, x1: b.end, y0: 0, y1: 1,
      fillcolor: TIER_COLOURS[b.tier] || "rgba(128,128,128,0.15)", line: { width: 0 }, layer: "below",
    })),
  };
  const axes = hasPrice
    ? [[priceAxis, "price (USD)", domains[0]], [pAxis, "cascade probability (0-1)", domains[1]],
       [hAxis, "hedge (fraction of max)", domains[2]]]
    : [[pAxis, "cascade probability (0-1)", domains[0]], [hAxis, "hedge (fraction of max)", domains[1]]];
  for (const [axis, title, domain] of axes) {
    layout[axisKey(axis)] = { title: { text: title }, domain, anchor: "x" };
  }
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
