// Fleet clears: filters, the coordinator's preview, confirmation, and progress per branch request.
"use strict";

const fleetClear = { body: null, plan: null, timer: null };

function fleetFilters() {
  const checked = (name) => [...document.querySelectorAll(`input[name="${name}"]:checked`)].map((i) => i.value);
  const days = $("fc-days").value;
  return {
    branches: $("fc-branches").value.split(/[\s,]+/).filter(Boolean),
    families: checked("fc-family"), statuses: checked("fc-status"),
    invoice_types: $("fc-types").value.split(/[\s,]+/).filter(Boolean),
    within_days: days === "" ? null : Number(days),
  };
}

function fleetPlanTable(plan) {
  const families = (f) => Object.entries(f).map(([k, n]) => `${esc(familyWords(k))} ${n}`).join(" · ");
  return `<p class="plan-summary" id="fc-summary">${esc(t("{devices} devices in {branches} branches: {requests} clear requests",
    { devices: plan.devices, branches: plan.branches, requests: plan.requests }))}</p>
    <table id="fc-plan-table"><thead><tr><th>${esc(t("Branch"))}</th><th>${esc(t("Period"))}</th><th>${esc(t("Device count"))}</th>
    <th>${esc(t("Family"))}</th></tr></thead><tbody>${plan.groups.map((g) => `<tr><td>${esc(g.branch_id)}</td>
    <td>${esc(g.period)}</td><td>${g.devices}</td><td>${families(g.families)}</td></tr>`).join("")}</tbody></table>
    ${plan.truncated ? `<p>${esc(t("The first {n} requests are listed.", { n: plan.groups.length }))}</p>` : ""}`;
}

$("fleetclear-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  clearInterval(fleetClear.timer);
  $("fc-confirm-box").hidden = true;
  $("fc-progress").innerHTML = "";
  $("fc-plan").textContent = t("Previewing…");
  const period = $("fc-period").value.trim();
  fleetClear.body = { filters: fleetFilters(), ...(period ? { period } : {}) };
  try {
    fleetClear.plan = await api("/api/fleet/clears", { method: "POST", json: { ...fleetClear.body, preview: true } });
    $("fc-plan").innerHTML = fleetPlanTable(fleetClear.plan);
    $("fc-confirm-box").hidden = fleetClear.plan.devices === 0;
  } catch (err) {
    $("fc-plan").innerHTML = `<p class="warning">${esc(err.message)}</p>`;
  }
});

$("fc-confirm").addEventListener("click", async () => {
  $("fc-confirm-box").hidden = true;
  try {
    const answer = await api("/api/fleet/clears", { method: "POST",
      json: { ...fleetClear.body, confirm: fleetClear.plan.confirmation } });
    $("fc-progress").innerHTML = `<p>${esc(t("Submitted {fleet}", { fleet: answer.fleet_id }))}</p>`;
    await watchFleet(answer.fleet_id);
  } catch (err) {
    $("fc-progress").innerHTML = `<p class="warning">${esc(err.message)}</p>`;
  }
});

function renderFleetProgress(p) {
  const c = p.totals;
  const done = c.cleared + c.already_cleared;
  const width = (n) => `${(100 * n) / Math.max(1, c.devices)}%`;
  const steps = Object.entries(p.running_steps).map(([s, n]) => `${esc(t(STEP_WORDS[s] || s))}: ${n}`).join(" · ");
  $("fc-progress").innerHTML = `<div class="card" id="fc-status" data-finished="${p.finished}">
    <h3>${esc(p.fleet_id)} <small>${esc(chinaTime(p.created_at))}</small> —
      ${esc(p.finished ? t("finished") : t("running"))}</h3>
    <div class="stackbar"><div class="seg seg-cleared" style="width:${width(done)}"></div>
      <div class="seg seg-failing" style="width:${width(c.failed + c.skipped)}"></div>
      <div class="seg seg-running" style="width:${width(c.running)}"></div></div>
    <p class="counts-line">${esc(t("{done} of {devices} cleared · {failed} failed · {running} in progress",
      { done, devices: c.devices, failed: c.failed + c.skipped, running: c.running }))}</p>
    ${steps ? `<p class="hint">${esc(t("Where the running devices are"))}: ${steps}</p>` : ""}
    ${p.failures.map((f) => `<p class="warning">${esc(f.code)}: ${esc(errorWords(f.code))} (${f.devices})</p>`).join("")}
    <table id="fc-requests"><thead><tr><th>${esc(t("Branch"))}</th><th>${esc(t("Period"))}</th><th>${esc(t("Device count"))}</th>
      <th>${esc(t("Cleared"))}</th><th>${esc(t("Failed"))}</th><th>${esc(t("In progress"))}</th><th>${esc(t("Status"))}</th></tr></thead>
      <tbody>${p.rows.map((r) => `<tr data-request="${esc(r.request_id)}"><td>${esc(r.branch_id)}</td><td>${esc(r.period)}</td>
      <td>${r.devices}</td><td>${r.cleared + r.already_cleared}</td><td>${r.failed + r.skipped}</td><td>${r.running}</td>
      <td>${esc(t(r.status))}</td></tr>`).join("")}</tbody></table></div>`;
}

// Polls the aggregated progress (a few rows however many devices) until every request finished.
async function watchFleet(fleetId) {
  clearInterval(fleetClear.timer);
  const tick = async () => {
    const progress = await api(`/api/fleet/clears/${encodeURIComponent(fleetId)}`);
    renderFleetProgress(progress);
    if (progress.finished) clearInterval(fleetClear.timer);
  };
  await tick();
  fleetClear.timer = setInterval(() => tick().catch((err) => say(err.message, true)), 1000);
}
