// A stacked bar chart in SVG: devices cleared per day, one colour per branch, failures marked.
"use strict";

const PALETTE = ["#1d6fb8", "#2e9d5b", "#e0a100", "#8e5bb5", "#d1495b", "#2bb3c0", "#9e9e9e"];
const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text = null) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== null) el.textContent = text;
  return el;
}

function niceMax(value) {
  if (value <= 5) return 5;
  const step = 10 ** Math.floor(Math.log10(value));
  return Math.ceil(value / step) * step;
}

// chart: {series: [names], days: [{day, cleared: [n per series], failed}]}; today: YYYY-MM-DD
function stackedBars(box, chart, today, labels) {
  box.innerHTML = "";
  const width = 720, height = 260, left = 44, bottom = 36, top = 12, right = 12;
  const plotW = width - left - right, plotH = height - top - bottom;
  const totals = chart.days.map((d) => d.cleared.reduce((a, b) => a + b, 0));
  const max = niceMax(Math.max(1, ...totals, ...chart.days.map((d) => d.failed)));
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
    "aria-label": labels.title });
  for (let i = 0; i <= 4; i += 1) {
    const y = top + plotH - (plotH * i) / 4;
    root.append(svg("line", { x1: left, x2: width - right, y1: y, y2: y, class: "grid" }));
    root.append(svg("text", { x: left - 6, y: y + 4, "text-anchor": "end", class: "axis" }, String(Math.round((max * i) / 4))));
  }
  const slot = plotW / Math.max(1, chart.days.length);
  const barW = Math.max(4, slot * 0.62);
  chart.days.forEach((d, i) => {
    const x = left + i * slot + (slot - barW) / 2;
    let y = top + plotH;
    d.cleared.forEach((n, s) => {
      if (!n) return;
      const h = (plotH * n) / max;
      y -= h;
      const bar = svg("rect", { x, y, width: barW, height: h, fill: PALETTE[s % PALETTE.length] });
      bar.append(svg("title", {}, `${d.day} ${chart.series[s]}: ${n}`));
      root.append(bar);
    });
    if (d.failed) {
      const fy = top + plotH - (plotH * d.failed) / max;
      const mark = svg("circle", { cx: x + barW / 2, cy: fy, r: 4, class: "failed-mark" });
      mark.append(svg("title", {}, `${d.day} ${labels.failed}: ${d.failed}`));
      root.append(mark);
    }
    if (d.day === today) root.append(svg("rect", { x: left + i * slot, y: top, width: slot, height: plotH, class: "today" }));
    if (chart.days.length <= 16 || i % 2 === 0) {
      root.append(svg("text", { x: x + barW / 2, y: height - bottom + 16, "text-anchor": "middle", class: "axis" },
        d.day.slice(5)));
    }
  });
  box.append(root);
  const legend = document.createElement("div");
  legend.className = "legend";
  legend.innerHTML = chart.series.map((name, s) => `<span><i style="background:${PALETTE[s % PALETTE.length]}"></i>${
    esc(name === "other" ? labels.other : name)}</span>`).join("") + `<span><i class="failed-key"></i>${esc(labels.failed)}</span>`;
  box.append(legend);
}
