// ClearCard web console: plain JS over the console's HTTP API (no build step).
"use strict";

const STEPS = ["authorized", "prechecked", "backed_up", "offline_uploaded", "reported",
  "declaration_checked", "written_back", "verified"];
const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("clearcard.token"), me: null, preview: null };

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function say(text, error = false) {
  const box = $("message");
  box.hidden = !text;
  box.textContent = text || "";
  box.className = error ? "error" : "";
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.token) headers.authorization = `Bearer ${state.token}`;
  if (options.json !== undefined) {
    headers["content-type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  const answer = await fetch(path, { ...options, headers });
  const body = (answer.headers.get("content-type") || "").includes("json") ? await answer.json() : await answer.text();
  if (!answer.ok) {
    const error = body && body.error ? body.error : { code: answer.status, message: String(body) };
    if (answer.status === 401 && path !== "/api/login") signOut();
    throw Object.assign(new Error(`${error.code}: ${error.message}`), { code: error.code });
  }
  return body;
}

// sign in / out

async function signIn(token) {
  state.token = token.trim();
  try {
    state.me = await api("/api/me");
  } catch (err) {
    state.token = null;
    say(`Sign-in failed: ${err.message}`, true);
    return;
  }
  sessionStorage.setItem("clearcard.token", state.token);
  $("who").textContent = `${state.me.subject} (${state.me.role}; ${state.me.branches.join(", ")})`;
  $("logout").hidden = false;
  $("nav").hidden = false;
  for (const button of document.querySelectorAll("#nav button")) {
    const need = button.dataset.can;
    button.hidden = need ? !state.me.can.includes(need) : !state.me.can.includes("status.read");
  }
  say("");
  const first = [...document.querySelectorAll("#nav button")].find((b) => !b.hidden);
  show(first ? first.dataset.view : "login");
}

function signOut() {
  state.token = null;
  state.me = null;
  sessionStorage.removeItem("clearcard.token");
  $("nav").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  show("login");
}

$("login-token-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("login-token").value); });
$("login-password-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    const answer = await api("/api/login", { method: "POST", json: {
      username: $("login-user").value, password: $("login-password").value, totp: $("login-totp").value } });
    await signIn(answer.token);
  } catch (err) {
    say(err.code === "NOT_IMPLEMENTED" ? "Password login is not available here; use a token." : `Sign-in failed: ${err.message}`, true);
  }
});
$("logout").addEventListener("click", signOut);

// views

function show(view) {
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${view}`;
  for (const button of document.querySelectorAll("#nav button")) button.classList.toggle("active", button.dataset.view === view);
  const load = { fleet: loadFleet, audit: loadAudit, backups: loadBackups }[view];
  if (load) load().catch((err) => say(err.message, true));
}
for (const button of document.querySelectorAll("#nav button")) button.addEventListener("click", () => show(button.dataset.view));

// fleet

function countdown(days, risk) {
  return `<span class="badge risk-${esc(risk)}" title="days to the lock date">${days ?? "?"}</span>`;
}

function typesCell(types) {
  return Object.entries(types).map(([code, st]) => `<span class="st-${esc(st)}">${esc(code)}:${esc(st)}</span>`).join(" ");
}

async function loadFleet() {
  const params = new URLSearchParams();
  for (const [key, id] of [["branch", "filter-branch"], ["family", "filter-family"], ["status", "filter-status"],
    ["days", "filter-days"], ["filing", "filter-filing"], ["comparison", "filter-comparison"]]) {
    if ($(id).value) params.set(key, $(id).value);
  }
  const fleet = await api(`/api/status?${params}`);
  $("fleet-today").textContent = `as of ${fleet.today}`;
  const canConfirm = state.me.can.includes("digital.confirm");
  $("fleet").innerHTML = fleet.branches.map((b) => `
    <div class="branch" data-branch="${esc(b.branch_id)}">
      <h3>${esc(b.branch_id)} ${b.min_days_left === null ? "" : countdown(b.min_days_left, riskOf(b.min_days_left, fleet))}</h3>
      <div class="counts"><span class="badge risk-red">${b.counts.red}</span> red
        <span class="badge risk-amber">${b.counts.amber}</span> amber <span class="badge risk-green">${b.counts.green}</span> green
        ${b.counts.abandoned ? `<span class="badge risk-abandoned">${b.counts.abandoned}</span> abandoned` : ""}</div>
      ${b.devices.length ? `<table><thead><tr><th>device</th><th>family</th><th>machine</th><th>types</th><th>lock date</th>
        <th>days left</th><th title="the bureau's view of the open period">filing</th><th>comparison</th>
        <th>online</th><th>last clear</th></tr></thead><tbody>
        ${b.devices.map((d) => `<tr class="device risk-row-${esc(d.risk)}" data-device="${esc(d.device_id)}">
          <td class="mono">${esc(d.device_id)}</td><td>${esc(d.family)}</td><td>${esc(d.machine_no)}</td>
          <td>${typesCell(d.types)}</td><td>${esc(d.lock_date || "-")}</td>
          <td>${d.abandoned ? `<span class="badge risk-abandoned" title="no report since ${esc(d.last_report)}">abandoned</span>`
            : countdown(d.days_left, d.risk)}</td>
          <td class="bureau-${esc(d.filing)}">${d.bureau.due ? esc(d.filing.replace("_", " ")) : "not due"}</td>
          <td class="bureau-${esc(d.comparison)}">${d.bureau.due ? esc(d.comparison) : "-"}</td>
          <td>${d.online ? "yes" : "no"}</td>
          <td>${d.last_clear ? `${esc(d.last_clear.outcome || d.last_clear.step)} ${esc(d.last_clear.error_code || "")}` : "-"}</td>
        </tr>`).join("")}</tbody></table>` : ""}
      ${b.digital.length ? `<table class="digital"><thead><tr><th>digital-invoice taxpayer (数电)</th><th>period</th>
        <th>blue: count / amount / tax</th><th>red: count / amount / tax</th><th>deadline</th><th>days left</th><th>status</th></tr></thead><tbody>
        ${b.digital.map((c) => `<tr><td>${esc(c.name)} <span class="mono">${esc(c.taxpayer_id)}</span></td><td>${esc(c.period)}</td>
          <td>${c.blue_count} / ${esc(c.blue_amount)} / ${esc(c.blue_tax)}</td><td>${c.red_count} / ${esc(c.red_amount)} / ${esc(c.red_tax)}</td>
          <td>${esc(c.deadline)}</td><td>${c.days_left === null ? "-" : countdown(c.days_left, riskOf(c.days_left, fleet))}</td>
          <td>${c.status === "pending" && canConfirm ? `<button class="digital-confirm" data-taxpayer="${esc(c.taxpayer_id)}"
            data-period="${esc(c.period)}">Confirm</button>` : esc(c.status)}</td></tr>`).join("")}</tbody></table>` : ""}
    </div>`).join("") || "<p>No devices match.</p>";
  for (const row of document.querySelectorAll("tr.device")) row.addEventListener("click", () => loadDevice(row.dataset.device));
  for (const button of document.querySelectorAll(".digital-confirm")) {
    button.addEventListener("click", async () => {
      await api(`/api/digital/${button.dataset.taxpayer}/${button.dataset.period}/confirm`, { method: "POST" });
      loadFleet();
    });
  }
}

// the server's thresholds (shared/deadlines.py): red = critical alarm, amber = warning
function riskOf(days, fleet) {
  return days === null ? "unknown" : days <= fleet.red_days ? "red" : days <= fleet.amber_days ? "amber" : "green";
}

async function loadDevice(deviceId) {
  const box = $("device-detail");
  box.hidden = false;
  box.innerHTML = "Asking the device…";
  const d = await api(`/api/devices/${deviceId}`);
  const m = d.monitoring;
  const monitoring = m.available ? `<table><tbody>${["lock_date", "report_window_start", "report_window_end",
    "latest_report_date", "upload_deadline", "single_invoice_limit", "positive_cumulative_limit",
    "negative_cumulative_limit", "offline_hours_limit", "offline_amount_limit", "clock", "pin_tries_left", "offline_pending"]
    .map((k) => `<tr><th>${esc(k)}</th><td>${esc(m[k])}</td></tr>`).join("")}</tbody></table>`
    : `<p>Monitoring data not available (${esc(m.reason)}).</p>`;
  box.innerHTML = `<h3>Device <span class="mono">${esc(d.device_id)}</span> ${countdown(d.days_left, d.risk)}</h3>
    <p>${esc(d.family)}, taxpayer <span class="mono">${esc(d.taxpayer_id)}</span>, machine ${esc(d.machine_no)},
      branch ${esc(d.branch_id)}, open period ${esc(d.open_period)}; types: ${typesCell(d.types)}</p>
    ${state.me.can.includes("clear.preview") ? `<button id="device-clear" data-branch="${esc(d.branch_id)}"
      data-period="${esc(d.open_period || "")}">Clear this device…</button>` : ""}
    <h4>Monitoring data (监控管理数据)</h4>${monitoring}
    <h4>History</h4><table><thead><tr><th>request</th><th>period</th><th>mode</th><th>step</th><th>outcome</th><th>error</th><th>when</th></tr></thead>
    <tbody>${d.history.map((h) => `<tr><td class="mono">${esc(h.request_id)}</td><td>${esc(h.period)}</td><td>${esc(h.mode)}</td>
      <td>${esc(h.step)}</td><td>${esc(h.outcome || "running")}</td><td>${esc(h.error_code || "")}</td><td>${esc(h.updated_at)}</td></tr>`).join("")}</tbody></table>`;
  const clearButton = $("device-clear");
  if (clearButton) {
    clearButton.addEventListener("click", () => {
      $("clear-branch").value = clearButton.dataset.branch;
      $("clear-period").value = clearButton.dataset.period;
      $("clear-devices").value = deviceId;
      show("clear");
    });
  }
}

$("fleet-filters").addEventListener("submit", (e) => { e.preventDefault(); loadFleet().catch((err) => say(err.message, true)); });

// preview, confirm and follow a manual clear

function clearRequest(extra) {
  const list = (id) => $(id).value.split(/[\s,]+/).filter(Boolean);
  return { branch_id: $("clear-branch").value.trim(), period: $("clear-period").value.trim(),
    device_ids: list("clear-devices"), invoice_types: list("clear-types"), ...extra };
}

$("clear-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("plan").innerHTML = "Previewing…";
  $("confirm-box").hidden = true;
  $("progress").innerHTML = "";
  $("clear-final").textContent = "";
  $("timeline").innerHTML = "";
  try {
    const answer = await api("/api/clears?wait=true", { method: "POST", json: clearRequest({ preview: true }) });
    const final = answer.final;
    if (final.event === "clear.rejected") {
      $("plan").innerHTML = `<p class="warning">${esc(final.error.code)}: ${esc(final.error.message)}</p>`;
      return;
    }
    state.preview = { request: clearRequest({}), confirmation: final.confirmation };
    $("plan").innerHTML = `<table id="plan-table"><thead><tr><th>device</th><th>family</th><th>action</th><th>type</th>
      <th>status</th><th>invoices</th><th>amount</th><th>tax</th></tr></thead><tbody>
      ${final.plan.map((p) => (p.types.length ? p.types : [{}]).map((t, i) => `<tr>
        <td class="mono">${i ? "" : esc(p.device_id)}</td><td>${i ? "" : esc(p.family)}</td>
        <td>${i ? "" : esc(p.action) + (p.error ? ` (${esc(p.error.code)})` : "")}</td>
        <td>${esc(t.invoice_type)}</td><td>${esc(t.status)}</td><td>${esc(t.invoice_count)}</td><td>${esc(t.amount)}</td><td>${esc(t.tax)}</td>
      </tr>`).join("")).join("")}</tbody></table>`;
    $("confirm-box").hidden = !final.plan.some((p) => p.action === "clear") || !state.me.can.includes("clear.manual");
  } catch (err) {
    $("plan").innerHTML = `<p class="warning">${esc(err.message)}</p>`;
  }
});

$("confirm").addEventListener("click", async () => {
  $("confirm-box").hidden = true;
  try {
    const answer = await api("/api/clears", { method: "POST",
      json: { ...state.preview.request, mode: "manual", confirm: state.preview.confirmation } });
    await follow(answer.request_id);
  } catch (err) {
    $("clear-final").innerHTML = `<span class="warning">${esc(err.message)}</span>`;
  }
});

function deviceRow(deviceId) {
  let row = document.querySelector(`#progress [data-device="${deviceId}"]`);
  if (!row) {
    $("progress").insertAdjacentHTML("beforeend", `<div class="progress-device" data-device="${esc(deviceId)}">
      <span class="mono">${esc(deviceId)}</span> <span class="bar"><div style="width:0%"></div></span>
      <span class="percent">0%</span> <span class="step"></span>
      <ul class="steps">${STEPS.map((s) => `<li data-step="${s}">${s}</li>`).join("")}</ul></div>`);
    row = document.querySelector(`#progress [data-device="${deviceId}"]`);
  }
  return row;
}

function onEvent(event) {
  if (event.event === "clear.accepted") {
    $("clear-final").textContent = `Accepted ${event.request_id} (trace ${event.trace_id})`;
    event.devices.forEach(deviceRow);
  } else if (event.event === "clear.progress") {
    const row = deviceRow(event.device_id);
    row.querySelector(".bar > div").style.width = `${event.percent}%`;
    row.querySelector(".percent").textContent = `${event.percent}%`;
    row.querySelector(".step").textContent = event.step;
    for (const li of row.querySelectorAll(".steps li")) {
      if (STEPS.indexOf(li.dataset.step) <= STEPS.indexOf(event.step)) li.classList.add("done");
    }
  } else if (event.event === "clear.finished" || event.event === "clear.rejected") {
    const status = event.status || "rejected";
    for (const r of event.results || []) {
      const row = deviceRow(r.device_id);
      row.querySelector(".step").textContent = r.outcome + (r.error ? ` — ${r.error.code}: ${r.error.message}` : "");
      if (r.outcome === "failed") row.querySelector(".bar").classList.add("failed");
    }
    $("clear-final").className = `final-${status}`;
    $("clear-final").textContent = event.error ? `rejected: ${event.error.code}: ${event.error.message}`
      : `${status} (trace ${event.trace_id})`;
    $("clear-final").dataset.status = status;
  }
}

async function follow(requestId) {
  const answer = await fetch(`/api/clears/${requestId}/events`, { headers: { authorization: `Bearer ${state.token}` } });
  if (!answer.ok) throw new Error(`cannot follow ${requestId}: ${answer.status}`);
  const reader = answer.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let done = false;
  while (!done) {
    const chunk = await reader.read();
    if (chunk.done) break;
    buffer += decoder.decode(chunk.value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (!data) continue;
      const event = JSON.parse(data);
      onEvent(event);
      done = ["clear.finished", "clear.rejected"].includes(event.event);
    }
  }
  await showTimeline(requestId);
}

async function showTimeline(requestId) {
  const t = await api(`/api/clears/${requestId}/timeline`);
  $("timeline").innerHTML = `<h3>Timeline of <span class="mono">${esc(requestId)}</span></h3>` + t.devices.map((d) => `
    <h4 class="mono">${esc(d.device_id)} — ${esc(d.outcome || "running")} ${esc(d.error_code || "")}</h4>
    <table class="timeline" data-device="${esc(d.device_id)}"><thead><tr><th>step</th><th>at</th><th>seconds</th><th>outcome</th></tr></thead>
    <tbody>${d.steps.map((s) => `<tr><td>${esc(s.step)}</td><td>${esc(s.at)}</td><td>${esc(s.seconds)}</td>
      <td>${esc(s.outcome || "")} ${esc(s.error_code || "")}</td></tr>`).join("")}</tbody></table>`).join("");
}

// audit and backups

async function loadAudit() {
  const params = new URLSearchParams({ limit: "500" });
  for (const [key, id] of [["request_id", "audit-request"], ["device_id", "audit-device"], ["branch_id", "audit-branch"]]) {
    if ($(id).value) params.set(key, $(id).value);
  }
  if ($("audit-since").value) params.set("since", new Date($("audit-since").value).toISOString());
  const records = await api(`/api/audit?${params}`);
  $("audit").innerHTML = `<table><thead><tr><th>#</th><th>at</th><th>service</th><th>who</th><th>action</th><th>request</th>
    <th>device</th><th>outcome</th><th>error</th></tr></thead><tbody>${records.map((r) => `<tr><td>${esc(r.seq)}</td>
    <td>${esc(r.at)}</td><td>${esc(r.service)}</td><td>${esc(r.subject)}</td><td>${esc(r.action)}</td>
    <td class="mono">${esc(r.request_id || "")}</td><td class="mono">${esc(r.device_id || "")}</td><td>${esc(r.outcome || "")}</td>
    <td>${esc(r.error_code || "")}</td></tr>`).join("")}</tbody></table>`;
}
$("audit-filters").addEventListener("submit", (e) => { e.preventDefault(); loadAudit().catch((err) => say(err.message, true)); });
$("audit-verify").addEventListener("click", async () => {
  const report = await api("/api/audit/verify");
  $("audit-verify-result").textContent = report.result;
  $("audit-verify-result").className = report.ok ? "final-succeeded" : "final-failed";
});

async function loadBackups() {
  const backups = await api("/api/backups");
  $("backups").innerHTML = `<table><thead><tr><th>backup</th><th>device</th><th>period</th><th>taken at</th><th>size</th>
    <th>locations</th><th></th></tr></thead><tbody>${backups.map((b) => `<tr><td class="mono">${esc(b.backup_id)}</td>
    <td class="mono">${esc(b.device_id)}</td><td>${esc(b.period)}</td><td>${esc(b.taken_at)}</td><td>${esc(b.size)}</td>
    <td>${b.locations.map(esc).join("<br>")}</td><td><button class="backup-verify" data-id="${esc(b.backup_id)}">Verify</button>
    <span class="verify-result"></span></td></tr>`).join("")}</tbody></table>`;
  for (const button of document.querySelectorAll(".backup-verify")) {
    button.addEventListener("click", async () => {
      const r = await api(`/api/backups/${button.dataset.id}/verify`, { method: "POST" });
      button.nextElementSibling.textContent = r.ok ? "every copy intact" : `damaged: ${r.damaged.join(", ")}`;
    });
  }
}

if (state.token) signIn(state.token); else show("login");
