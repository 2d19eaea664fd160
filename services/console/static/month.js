// The month at a glance: tiles, a progress bar, clears per day by branch, failure reasons, branches.
"use strict";

const month = { offset: 0, limit: 25, period: "" };

function tile(key, label, value, extra = "") {
  return `<div class="tile tile-${key}" data-tile="${key}"><div class="value">${esc(value)}</div>
    <div class="label">${esc(t(label))}</div>${extra ? `<div class="extra">${extra}</div>` : ""}</div>`;
}

function percent(part, whole) {
  return whole ? Math.round((100 * part) / whole) : 0;
}

function branchTable(page) {
  if (!page.rows.length) return `<p>${esc(t("No devices match."))}</p>`;
  return `<table id="month-branch-table"><thead><tr><th>${esc(t("Branch"))}</th><th>${esc(t("Device count"))}</th>
    <th>${esc(t("Cleared"))}</th><th>${esc(t("Remaining"))}</th><th>${esc(t("Failing"))}</th><th>${esc(t("In progress"))}</th>
    <th>${esc(t("At risk"))}</th><th>${esc(t("Fewest days left"))}</th><th>${esc(t("Progress"))}</th></tr></thead><tbody>
    ${page.rows.map((b) => `<tr class="month-branch" data-branch="${esc(b.branch_id)}">
      <td>${esc(b.branch_id)}</td><td>${b.devices}</td><td>${b.cleared}</td><td>${b.remaining}</td>
      <td class="${b.failing ? "bad" : ""}">${b.failing}</td><td>${b.running}</td><td class="${b.at_risk ? "bad" : ""}">${b.at_risk}</td>
      <td>${b.remaining ? countdown(b.min_days_left, b.min_days_risk) : "✓"}</td>
      <td><span class="bar small"><div style="width:${percent(b.cleared, b.devices)}%"></div></span> ${percent(b.cleared, b.devices)}%</td>
    </tr>`).join("")}</tbody></table>`;
}

LOADERS.month = async function loadMonth() {
  const params = new URLSearchParams({ limit: String(month.limit), offset: String(month.offset) });
  if (month.period) params.set("period", month.period);
  const m = await api(`/api/month?${params}`);
  const c = m.totals;
  $("month-period").value = m.period;
  $("month-title").textContent = t("period {period} · reporting window {start} to {end} · today {today}",
    { period: m.period, start: m.window.start, end: m.window.end, today: m.today });
  $("month-tiles").innerHTML = tile("devices", N_("All devices"), c.devices)
    + tile("cleared", N_("Cleared"), c.cleared, `${percent(c.cleared, c.devices)}%`)
    + tile("remaining", N_("Remaining"), c.remaining, t("{n} in progress", { n: c.running }))
    + tile("failing", N_("Failing"), c.failing)
    + tile("at_risk", N_("At risk"), c.at_risk, c.min_days_left === null ? "" : t("fewest days left: {n}", { n: c.min_days_left }));
  const parts = [["cleared", c.cleared], ["running", c.running], ["failing", c.failing], ["not_started", c.not_started]];
  $("month-progress").innerHTML = parts.filter(([, n]) => n).map(([k, n]) => `<div class="seg seg-${k}"
    style="width:${(100 * n) / Math.max(1, c.devices)}%" title="${esc(t(k === "not_started" ? "Not started" : k === "running" ? "In progress" : k === "failing" ? "Failing" : "Cleared"))}: ${n}"></div>`).join("");
  stackedBars($("month-chart"), m.chart, m.today, { title: t("Devices cleared per day, by branch"), failed: t("Failed"),
    other: t("other branches") });
  $("month-failures").innerHTML = m.failures.length ? `<table><tbody>${m.failures.map((f) => `<tr><td>
    <b>${esc(errorWords(f.code))}</b><br><span class="mono">${esc(f.code)}</span></td><td class="num">${f.devices}</td></tr>`).join("")}
    </tbody></table>` : `<p>${esc(t("No device is failing."))}</p>`;
  $("month-branches").innerHTML = branchTable(m.branches);
  const pages = Math.ceil(m.branches.total / month.limit);
  $("month-pages").innerHTML = pages > 1 ? `${esc(t("Page {page} of {pages}", { page: month.offset / month.limit + 1, pages }))}
    <button id="month-prev" ${month.offset ? "" : "disabled"}>‹</button><button id="month-next"
    ${month.offset + month.limit < m.branches.total ? "" : "disabled"}>›</button>` : "";
  if ($("month-prev")) {
    $("month-prev").addEventListener("click", () => { month.offset -= month.limit; LOADERS.month(); });
    $("month-next").addEventListener("click", () => { month.offset += month.limit; LOADERS.month(); });
  }
  for (const row of document.querySelectorAll("tr.month-branch")) {
    row.addEventListener("click", () => { $("filter-branch").value = row.dataset.branch; show("fleet"); });
  }
};

$("month-form").addEventListener("submit", (e) => {
  e.preventDefault();
  month.period = $("month-period").value.trim();
  month.offset = 0;
  LOADERS.month().catch((err) => say(err.message, true));
});
