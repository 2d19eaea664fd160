// ClearCard web console: plain JS over the console's HTTP API (no build step). Words: i18n.js.
"use strict";

const STEPS = ["authorized", "prechecked", "backed_up", "offline_uploaded", "reported",
  "declaration_checked", "written_back", "verified"];
const STEP_WORDS = { authorized: N_("authorized"), prechecked: N_("checked"), backed_up: N_("backed up"),
  offline_uploaded: N_("offline invoices uploaded"), reported: N_("reported (抄报)"), declaration_checked: N_("filing and comparison checked"),
  written_back: N_("written back (反写)"), verified: N_("verified"), finished: N_("finished") };
const FAMILY_WORDS = { ukey: N_("tax UKey"), golden_tax_disk: N_("golden tax disk"), tax_control_disk: N_("tax control disk") };
const OUTCOME_WORDS = { cleared: N_("cleared"), already_cleared: N_("already cleared"), failed: N_("failed"), skipped: N_("skipped"),
  running: N_("in progress") };
const BUREAU_WORDS = { filed: N_("filed"), not_filed: N_("not filed"), unknown: N_("unknown"), pass: N_("pass"),
  fail: N_("fail"), pending: N_("pending") };
const TYPE_STATUS_WORDS = { needs_report: N_("needs report"), reported: N_("reported"), cleared: N_("cleared") };
// words the API sends as data (modes, confirmation and request statuses), translated where shown
const DATA_WORDS = [N_("auto"), N_("manual"), N_("pending"), N_("confirmed"), N_("running"), N_("finished")];
const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("clearcard.token"), me: null, preview: null, view: null };

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function say(text, error = false) {
  const box = $("message");
  box.hidden = !text;
  box.textContent = text || "";
  box.className = error ? "error" : "";
}

function errorText(error) {
  return error.message || errorWords(error.code);
}

async function api(path, options = {}) {
  const headers = { "accept-language": i18n.locale, ...(options.headers || {}) };
  if (state.token) headers.authorization = `Bearer ${state.token}`;
  if (options.json !== undefined) {
    headers["content-type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  const answer = await fetch(path, { ...options, headers });
  if (options.raw && answer.ok) return answer;
  const body = (answer.headers.get("content-type") || "").includes("json") ? await answer.json() : await answer.text();
  if (!answer.ok) {
    const error = body && body.error ? body.error : { code: String(answer.status), message: String(body) };
    if (answer.status === 401 && path !== "/api/login") signOut();
    throw Object.assign(new Error(errorText(error)), { code: error.code, detail: error });
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
    say(`${t("Sign-in failed")}: ${err.message}`, true);
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
  $("login-error").hidden = true;
  try {
    const totp = $("login-totp").value.trim();
    const answer = await api("/api/login", { method: "POST", json: {
      username: $("login-user").value, password: $("login-password").value, ...(totp ? { totp } : {}) } });
    $("login-password").value = "";
    $("login-totp").value = "";
    await signIn(answer.token);
  } catch (err) {
    $("login-error").textContent = err.message;
    $("login-error").hidden = false;
  }
});
$("logout").addEventListener("click", signOut);
$("language").addEventListener("click", async () => {
  await loadLanguage(i18n.locale === "zh-CN" ? "en" : "zh-CN");
  if (state.view && state.view !== "login") show(state.view);
});

// views

const LOADERS = {};

function show(view) {
  state.view = view;
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${view}`;
  for (const button of document.querySelectorAll("#nav button")) button.classList.toggle("active", button.dataset.view === view);
  const load = LOADERS[view];
  if (load) load().catch((err) => say(err.message, true));
}
for (const button of document.querySelectorAll("#nav button")) button.addEventListener("click", () => show(button.dataset.view));

// devices

function countdown(days, risk) {
  return `<span class="badge risk-${esc(risk)}" title="${esc(t("days to the lock date"))}">${days ?? "?"}</span>`;
}

function typesCell(types) {
  return Object.entries(types).map(([code, st]) => `<span class="st-${esc(st)}">${esc(code)}:${esc(t(TYPE_STATUS_WORDS[st] || st))}</span>`).join(" ");
}

function familyWords(family) {
  return t(FAMILY_WORDS[family] || family);
}

LOADERS.fleet = async function loadFleet() {
  const params = new URLSearchParams({ limit: "2000" });
  for (const [key, id] of [["branch", "filter-branch"], ["family", "filter-family"], ["status", "filter-status"],
    ["days", "filter-days"], ["filing", "filter-filing"], ["comparison", "filter-comparison"]]) {
    if ($(id).value) params.set(key, $(id).value);
  }
  const fleet = await api(`/api/fleet?${params}`);
  $("fleet-today").textContent = t("as of {date}", { date: fleet.today });
  $("fleet-truncated").hidden = !fleet.truncated;
  $("fleet-truncated").textContent = t("Showing {shown} of {matched} devices: choose a branch or filters to see the rest.",
    { shown: fleet.devices.length, matched: fleet.matched });
  const canConfirm = state.me.can.includes("digital.confirm");
  $("fleet").innerHTML = fleet.branches.map((b) => `
    <div class="branch" data-branch="${esc(b.branch_id)}">
      <h3>${esc(b.branch_id)} ${b.min_days_left === null ? "" : countdown(b.min_days_left, b.devices.reduce(
        (worst, d) => (d.days_left === b.min_days_left ? d.risk : worst), "unknown"))}</h3>
      <div class="counts"><span class="badge risk-red">${b.counts.red}</span> ${esc(t("red"))}
        <span class="badge risk-amber">${b.counts.amber}</span> ${esc(t("amber"))}
        <span class="badge risk-green">${b.counts.green}</span> ${esc(t("green"))}
        ${b.counts.abandoned ? `<span class="badge risk-abandoned">${b.counts.abandoned}</span> ${esc(t("abandoned"))}` : ""}</div>
      ${b.devices.length ? `<table><thead><tr><th>${esc(t("Device"))}</th><th>${esc(t("Family"))}</th><th>${esc(t("Machine no."))}</th>
        <th>${esc(t("Invoice types"))}</th><th>${esc(t("Lock date"))}</th><th>${esc(t("Days left"))}</th>
        <th title="${esc(t("the bureau's view of the open period"))}">${esc(t("Filing"))}</th><th>${esc(t("Comparison"))}</th>
        <th>${esc(t("Online"))}</th>
        <th>${esc(t("Last clear"))}</th></tr></thead><tbody>
        ${b.devices.map((d) => `<tr class="device risk-row-${esc(d.risk)}" data-device="${esc(d.device_id)}">
          <td class="mono">${esc(d.device_id)}</td><td>${esc(familyWords(d.family))}</td><td>${esc(d.machine_no)}</td>
          <td>${typesCell(d.types)}</td><td>${esc(d.lock_date || "-")}</td>
          <td>${d.abandoned ? `<span class="badge risk-abandoned" title="${esc(t("no report since {date}", { date: d.last_report }))}">${
            esc(t("abandoned"))}</span>` : countdown(d.days_left, d.risk)}</td>
          <td class="${d.bureau.due ? `bureau-${esc(d.filing)}` : ""}">${d.bureau.due ? esc(t(BUREAU_WORDS[d.filing] || d.filing)) : esc(t("not due"))}</td>
          <td class="${d.bureau.due ? `bureau-${esc(d.comparison)}` : ""}">${d.bureau.due ? esc(t(BUREAU_WORDS[d.comparison] || d.comparison)) : "-"}</td>
          <td>${d.online ? esc(t("yes")) : esc(t("no"))}</td>
          <td>${d.last_clear ? `${esc(t(OUTCOME_WORDS[d.last_clear.outcome] || STEP_WORDS[d.last_clear.step] || d.last_clear.step))}
            ${d.last_clear.error_code ? `<span title="${esc(errorWords(d.last_clear.error_code))}">${esc(d.last_clear.error_code)}</span>` : ""}` : "-"}</td>
        </tr>`).join("")}</tbody></table>` : ""}
      ${b.digital.length ? `<table class="digital"><thead><tr><th>${esc(t("Digital-invoice taxpayer (数电)"))}</th><th>${esc(t("Period"))}</th>
        <th>${esc(t("Blue: count / amount / tax"))}</th><th>${esc(t("Red: count / amount / tax"))}</th><th>${esc(t("Deadline"))}</th>
        <th>${esc(t("Days left"))}</th><th>${esc(t("Status"))}</th></tr></thead><tbody>
        ${b.digital.map((c) => `<tr><td>${esc(c.name)} <span class="mono">${esc(c.taxpayer_id)}</span></td><td>${esc(c.period)}</td>
          <td>${c.blue_count} / ${esc(c.blue_amount)} / ${esc(c.blue_tax)}</td><td>${c.red_count} / ${esc(c.red_amount)} / ${esc(c.red_tax)}</td>
          <td>${esc(c.deadline)}</td><td>${c.days_left === null ? "-" : countdown(c.days_left, riskOf(c.days_left, fleet))}</td>
          <td>${c.status === "pending" && canConfirm ? `<button class="digital-confirm" data-taxpayer="${esc(c.taxpayer_id)}"
            data-period="${esc(c.period)}">${esc(t("Confirm"))}</button>` : esc(t(c.status))}</td></tr>`).join("")}</tbody></table>` : ""}
    </div>`).join("") || `<p>${esc(t("No devices match."))}</p>`;
  for (const row of document.querySelectorAll("tr.device")) row.addEventListener("click", () => loadDevice(row.dataset.device));
  for (const button of document.querySelectorAll(".digital-confirm")) {
    button.addEventListener("click", async () => {
      await api(`/api/digital/${button.dataset.taxpayer}/${button.dataset.period}/confirm`, { method: "POST" });
      LOADERS.fleet();
    });
  }
};

// the server's thresholds (shared/deadlines.py): red = critical alarm, amber = warning
function riskOf(days, fleet) {
  return days === null ? "unknown" : days <= fleet.red_days ? "red" : days <= fleet.amber_days ? "amber" : "green";
}

const MONITORING_FIELDS = [["lock_date", N_("Lock date (开票截止日期)")], ["report_window_start", N_("Reporting window opens")],
  ["report_window_end", N_("Reporting window closes")], ["latest_report_date", N_("Latest report date")],
  ["upload_deadline", N_("Upload deadline")], ["single_invoice_limit", N_("Single-invoice limit")],
  ["positive_cumulative_limit", N_("Positive cumulative limit")], ["negative_cumulative_limit", N_("Negative cumulative limit")],
  ["offline_hours_limit", N_("Offline invoicing hours limit")], ["offline_amount_limit", N_("Offline invoicing amount limit")],
  ["clock", N_("Device clock")], ["pin_tries_left", N_("PIN tries left")], ["offline_pending", N_("Offline invoices pending")]];

async function loadDevice(deviceId) {
  const box = $("device-detail");
  box.hidden = false;
  box.textContent = t("Asking the device…");
  const d = await api(`/api/devices/${deviceId}`);
  const m = d.monitoring;
  const monitoring = m.available ? `<table class="monitoring"><tbody>${MONITORING_FIELDS
    .map(([k, label]) => `<tr><th>${esc(t(label))}</th><td data-field="${esc(k)}">${esc(k === "clock" ? chinaTime(m[k], true) : m[k])}</td></tr>`).join("")}</tbody></table>`
    : `<p>${esc(t("Monitoring data not available ({reason}).", { reason: m.reason }))}</p>`;
  box.innerHTML = `<h3>${esc(t("Device"))} <span class="mono">${esc(d.device_id)}</span> ${countdown(d.days_left, d.risk)}</h3>
    <p>${esc(familyWords(d.family))} · ${esc(t("Taxpayer ID"))} <span class="mono">${esc(d.taxpayer_id)}</span> ·
      ${esc(t("Machine no."))} ${esc(d.machine_no)} · ${esc(t("Branch"))} ${esc(d.branch_id)} ·
      ${esc(t("Open period"))} ${esc(d.open_period)} · ${typesCell(d.types)}</p>
    ${state.me.can.includes("clear.preview") ? `<button id="device-clear" data-branch="${esc(d.branch_id)}"
      data-period="${esc(d.open_period || "")}">${esc(t("Clear this device…"))}</button>` : ""}
    <h4>${esc(t("Monitoring data (监控管理数据)"))}</h4>${monitoring}
    <h4>${esc(t("History"))}</h4><table><thead><tr><th>${esc(t("Request"))}</th><th>${esc(t("Period"))}</th><th>${esc(t("Mode"))}</th>
    <th>${esc(t("Step"))}</th><th>${esc(t("Outcome"))}</th><th>${esc(t("Error code"))}</th><th>${esc(t("When (China time)"))}</th></tr></thead>
    <tbody>${d.history.map((h) => `<tr><td class="mono">${esc(h.request_id)}</td><td>${esc(h.period)}</td><td>${esc(t(h.mode))}</td>
      <td>${esc(t(STEP_WORDS[h.step] || h.step))}</td><td>${esc(t(OUTCOME_WORDS[h.outcome || "running"]))}</td>
      <td title="${esc(h.error_code ? errorWords(h.error_code) : "")}">${esc(h.error_code || "")}</td>
      <td>${esc(chinaTime(h.updated_at))}</td></tr>`).join("")}</tbody></table>`;
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

$("fleet-filters").addEventListener("submit", (e) => { e.preventDefault(); LOADERS.fleet().catch((err) => say(err.message, true)); });
