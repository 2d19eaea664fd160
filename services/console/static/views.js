// Manual clears (preview, confirm, follow live), reports, the audit log and backups.
"use strict";

function clearRequest(extra) {
  const list = (id) => $(id).value.split(/[\s,]+/).filter(Boolean);
  return { branch_id: $("clear-branch").value.trim(), period: $("clear-period").value.trim(),
    device_ids: list("clear-devices"), invoice_types: list("clear-types"), ...extra };
}

const ACTION_WORDS = { clear: N_("clear"), already_cleared: N_("already cleared"), blocked: N_("blocked") };

function planTable(plan) {
  return `<table id="plan-table"><thead><tr><th>${esc(t("Device"))}</th><th>${esc(t("Family"))}</th><th>${esc(t("Action"))}</th>
    <th>${esc(t("Invoice type"))}</th><th>${esc(t("Status"))}</th><th>${esc(t("Invoices"))}</th><th>${esc(t("Amount"))}</th>
    <th>${esc(t("Tax"))}</th></tr></thead><tbody>
    ${plan.map((p) => (p.types.length ? p.types : [{}]).map((ty, i) => `<tr>
      <td class="mono">${i ? "" : esc(p.device_id)}</td><td>${i ? "" : esc(familyWords(p.family))}</td>
      <td>${i ? "" : esc(t(ACTION_WORDS[p.action] || p.action)) + (p.error ? ` (${esc(p.error.code)}: ${esc(errorWords(p.error.code))})` : "")}</td>
      <td>${esc(ty.invoice_type)}</td><td>${esc(ty.status ? t(TYPE_STATUS_WORDS[ty.status] || ty.status) : "")}</td><td>${esc(ty.invoice_count)}</td>
      <td>${esc(ty.amount)}</td><td>${esc(ty.tax)}</td></tr>`).join("")).join("")}</tbody></table>`;
}

$("clear-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("plan").textContent = t("Previewing…");
  $("confirm-box").hidden = true;
  $("progress").innerHTML = "";
  $("clear-final").textContent = "";
  $("timeline").innerHTML = "";
  try {
    const answer = await api("/api/clears?wait=true", { method: "POST", json: clearRequest({ preview: true }) });
    const final = answer.final;
    if (final.event === "clear.rejected") {
      $("plan").innerHTML = `<p class="warning">${esc(final.error.code)}: ${esc(errorWords(final.error.code))}</p>`;
      return;
    }
    state.preview = { request: clearRequest({}), confirmation: final.confirmation };
    $("plan").innerHTML = planTable(final.plan);
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
      <ul class="steps">${STEPS.map((s) => `<li data-step="${s}">${esc(t(STEP_WORDS[s]))}</li>`).join("")}</ul></div>`);
    row = document.querySelector(`#progress [data-device="${deviceId}"]`);
  }
  return row;
}

const STATUS_WORDS = { succeeded: N_("succeeded"), partial: N_("partly succeeded"), failed: N_("failed"), rejected: N_("rejected") };

function onEvent(event) {
  if (event.event === "clear.accepted") {
    $("clear-final").textContent = t("Accepted {request} (trace {trace})", { request: event.request_id, trace: event.trace_id });
    event.devices.forEach(deviceRow);
  } else if (event.event === "clear.progress") {
    const row = deviceRow(event.device_id);
    row.querySelector(".bar > div").style.width = `${event.percent}%`;
    row.querySelector(".percent").textContent = `${event.percent}%`;
    row.querySelector(".step").textContent = t(STEP_WORDS[event.step] || event.step);
    for (const li of row.querySelectorAll(".steps li")) {
      if (STEPS.indexOf(li.dataset.step) <= STEPS.indexOf(event.step)) li.classList.add("done");
    }
  } else if (event.event === "clear.finished" || event.event === "clear.rejected") {
    const status = event.status || "rejected";
    for (const r of event.results || []) {
      const row = deviceRow(r.device_id);
      row.querySelector(".step").textContent = t(OUTCOME_WORDS[r.outcome] || r.outcome)
        + (r.error ? ` — ${r.error.code}: ${errorWords(r.error.code)}` : "");
      if (r.outcome === "failed") row.querySelector(".bar").classList.add("failed");
    }
    $("clear-final").className = `final-${status}`;
    $("clear-final").textContent = event.error ? `${t("rejected")}: ${event.error.code}: ${errorWords(event.error.code)}`
      : `${t(STATUS_WORDS[status] || status)} (trace ${event.trace_id})`;
    $("clear-final").dataset.status = status;
  }
}

async function follow(requestId) {
  const answer = await fetch(`/api/clears/${requestId}/events`, { headers: { authorization: `Bearer ${state.token}` } });
  if (!answer.ok) throw new Error(t("Cannot follow {request}: {status}", { request: requestId, status: answer.status }));
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
  const tl = await api(`/api/clears/${requestId}/timeline`);
  $("timeline").innerHTML = `<h3>${esc(t("Timeline of {request}", { request: requestId }))}</h3>` + tl.devices.map((d) => `
    <h4 class="mono">${esc(d.device_id)} — ${esc(t(OUTCOME_WORDS[d.outcome || "running"]))} ${esc(d.error_code || "")}</h4>
    <table class="timeline" data-device="${esc(d.device_id)}"><thead><tr><th>${esc(t("Step"))}</th><th>${esc(t("When (China time)"))}</th>
    <th>${esc(t("Seconds"))}</th><th>${esc(t("Outcome"))}</th></tr></thead>
    <tbody>${d.steps.map((s) => `<tr data-step="${esc(s.step)}"><td>${esc(t(STEP_WORDS[s.step] || s.step))}</td>
      <td>${esc(chinaTime(s.at, true))}</td><td>${esc(s.seconds)}</td>
      <td>${esc(s.outcome || "")} ${esc(s.error_code || "")}</td></tr>`).join("")}</tbody></table>`).join("");
}

// reports: fetched with the token, then handed to the browser as a download

$("report-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const format = e.submitter ? e.submitter.value : "xlsx";
  const period = $("report-period").value.trim();
  const params = new URLSearchParams({ format, lang: i18n.locale });
  for (const b of $("report-branch").value.split(/[\s,]+/).filter(Boolean)) params.append("branch", b);
  $("report-result").textContent = t("Preparing the report…");
  try {
    const answer = await api(`/api/reports/${encodeURIComponent(period)}?${params}`, { raw: true });
    const blob = await answer.blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `clearcard-${period}.${format}`;
    document.body.append(link);
    link.click();
    link.remove();
    $("report-result").textContent = t("Report ready: {name} ({size} KB)", { name: link.download, size: Math.ceil(blob.size / 1024) });
  } catch (err) {
    $("report-result").innerHTML = `<span class="warning">${esc(err.message)}</span>`;
  }
});

// audit and backups

LOADERS.audit = async function loadAudit() {
  const params = new URLSearchParams({ limit: "500" });
  for (const [key, id] of [["request_id", "audit-request"], ["device_id", "audit-device"], ["branch_id", "audit-branch"]]) {
    if ($(id).value) params.set(key, $(id).value);
  }
  if ($("audit-since").value) params.set("since", new Date(`${$("audit-since").value}:00+08:00`).toISOString());
  const records = await api(`/api/audit?${params}`);
  $("audit").innerHTML = `<table><thead><tr><th>#</th><th>${esc(t("When (China time)"))}</th><th>${esc(t("Service"))}</th>
    <th>${esc(t("Who"))}</th><th>${esc(t("Action"))}</th><th>${esc(t("Request"))}</th><th>${esc(t("Device"))}</th>
    <th>${esc(t("Outcome"))}</th><th>${esc(t("Error code"))}</th></tr></thead><tbody>${records.map((r) => `<tr><td>${esc(r.seq)}</td>
    <td>${esc(chinaTime(r.at, true))}</td><td>${esc(r.service)}</td><td>${esc(r.subject)}</td><td>${esc(r.action)}</td>
    <td class="mono">${esc(r.request_id || "")}</td><td class="mono">${esc(r.device_id || "")}</td><td>${esc(r.outcome || "")}</td>
    <td title="${esc(r.error_code ? errorWords(r.error_code) : "")}">${esc(r.error_code || "")}</td></tr>`).join("")}</tbody></table>`;
};
$("audit-filters").addEventListener("submit", (e) => { e.preventDefault(); LOADERS.audit().catch((err) => say(err.message, true)); });
$("audit-verify").addEventListener("click", async () => {
  const report = await api("/api/audit/verify");
  $("audit-verify-result").textContent = report.ok ? t("The audit chain is intact: {count} records.", { count: report.count })
    : report.result;
  $("audit-verify-result").className = report.ok ? "final-succeeded" : "final-failed";
});

LOADERS.backups = async function loadBackups() {
  const backups = await api("/api/backups");
  $("backups").innerHTML = `<table><thead><tr><th>${esc(t("Backup"))}</th><th>${esc(t("Device"))}</th><th>${esc(t("Period"))}</th>
    <th>${esc(t("Taken (China time)"))}</th><th>${esc(t("Size"))}</th><th>${esc(t("Locations"))}</th><th></th></tr></thead>
    <tbody>${backups.map((b) => `<tr><td class="mono">${esc(b.backup_id)}</td>
    <td class="mono">${esc(b.device_id)}</td><td>${esc(b.period)}</td><td>${esc(chinaTime(b.taken_at, true))}</td><td>${esc(b.size)}</td>
    <td>${b.locations.map(esc).join("<br>")}</td><td><button class="backup-verify" data-id="${esc(b.backup_id)}">${esc(t("Verify"))}</button>
    <span class="verify-result"></span></td></tr>`).join("")}</tbody></table>`;
  for (const button of document.querySelectorAll(".backup-verify")) {
    button.addEventListener("click", async () => {
      const r = await api(`/api/backups/${button.dataset.id}/verify`, { method: "POST" });
      button.nextElementSibling.textContent = r.ok ? t("every copy intact") : t("damaged: {copies}", { copies: r.damaged.join(", ") });
    });
  }
};
