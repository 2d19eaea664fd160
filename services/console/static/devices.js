// The device registry page: list, import, export, retire, set a PIN (admins; /api/registry).
"use strict";

const $ = (id) => document.getElementById(id);
const token = sessionStorage.getItem("clearcard.token");
let next = null;

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
  const headers = { authorization: `Bearer ${token}`, ...(options.headers || {}) };
  const answer = await fetch(path, { ...options, headers });
  const type = answer.headers.get("content-type") || "";
  const body = type.includes("json") ? await answer.json() : await answer.text();
  if (!answer.ok) {
    const error = body && body.error ? body.error : { code: answer.status, message: String(body) };
    throw Object.assign(new Error(`${error.code}: ${error.message}`), { body });
  }
  return body;
}

function stateOf(d) {
  if (!d.enrolled) return "<strong>not enrolled</strong>";
  return d.retired ? `retired ${esc((d.retired_at || "").slice(0, 10))}` : "in service";
}

function row(d) {
  const actions = !d.enrolled
    ? `<button data-enrol="${esc(d.device_id)}" data-family="${esc(d.family)}">Enrol…</button>`
    : d.retired ? "" : `<button data-pin="${esc(d.device_id)}">Set PIN</button>
       <button data-retire="${esc(d.device_id)}" class="danger">Retire</button>`;
  return `<tr data-device="${esc(d.device_id)}"><td class="mono">${esc(d.device_id)}</td><td>${esc(d.family)}${d.hardware_family
    ? ` (seen as ${esc(d.hardware_family)})` : ""}</td><td class="mono">${esc(d.taxpayer_id)}</td>
    <td>${esc(d.branch_id)}</td><td>${esc(d.machine_no)}</td><td>${esc(d.gateway_id)}</td>
    <td>${d.online ? "online" : "offline"}</td><td>${stateOf(d)}</td>
    <td>${d.enrolled ? (d.pin_on_record ? "on record" : "<strong>missing</strong>") : ""}</td><td>${actions}</td></tr>`;
}

async function load(more = false) {
  const branch = $("branch").value.trim();
  const query = new URLSearchParams();
  if (branch) query.set("branch", branch);
  if (more && next) query.set("after", next);
  try {
    const page = await api(`/api/registry/devices?${query}`);
    const body = $("devices").tBodies[0];
    body.innerHTML = (more ? body.innerHTML : "") + page.devices.map(row).join("");
    next = page.next;
    $("more").hidden = !next;
  } catch (err) {
    say(err.message, true);
  }
}

$("filters").addEventListener("submit", (e) => { e.preventDefault(); load(); });
$("more").addEventListener("click", () => load(true));

$("export").addEventListener("click", async () => {
  const branch = $("branch").value.trim();
  try {
    const csv = await api(`/api/registry/export${branch ? `?branch=${encodeURIComponent(branch)}` : ""}`);
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([csv], { type: "text/csv" }));
    link.download = branch ? `devices-${branch}.csv` : "devices.csv";
    link.click();
    URL.revokeObjectURL(link.href);
  } catch (err) {
    say(err.message, true);
  }
});

$("devices").addEventListener("click", async (e) => {
  const target = e.target;
  if (!(target instanceof HTMLButtonElement)) return;
  try {
    if (target.dataset.enrol) {
      $("import-text").value += `${target.dataset.enrol},${target.dataset.family},TAXPAYER_ID,BRANCH,0\n`;
      $("import-text").focus();
      say("Fill in the taxpayer id, branch and machine number, then Import.");
    } else if (target.dataset.retire) {
      const id = target.dataset.retire;
      if (!confirm(`Retire device ${id}? Requests naming it will be refused; its history and backups stay.`)) return;
      await api(`/api/registry/devices/${encodeURIComponent(id)}/retire`, { method: "POST" });
      say(`${id} retired.`);
      await load();
    } else if (target.dataset.pin) {
      const id = target.dataset.pin;
      const pin = prompt(`Certificate PIN of device ${id} (stored encrypted):`);
      if (!pin) return;
      const answer = await api(`/api/registry/devices/${encodeURIComponent(id)}/pin`, {
        method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify({ pin }) });
      say(`PIN of ${id} recorded (revision ${answer.pin_revision}); the next clear tries it.`);
      load();
    }
  } catch (err) {
    say(err.message, true);
  }
});

$("import-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const file = $("import-file").files[0];
  const body = file || $("import-text").value;
  $("import-errors").innerHTML = "";
  try {
    const counts = await api("/api/registry/import", {
      method: "POST", body, headers: { "content-type": "text/csv", "x-file-name": file ? file.name : "pasted rows" } });
    say(`${counts.enrolled} enrolled, ${counts.updated} updated, ${counts.reinstated} back in service, ` +
      `${counts.unchanged} unchanged.`);
    load();
  } catch (err) {
    say(err.message, true);
    const errors = (err.body && err.body.errors) || [];
    $("import-errors").innerHTML = errors.map((x) => `<li>line ${esc(x.line)}: ${esc(x.message)}</li>`).join("");
  }
});

(async () => {
  if (!token) { $("signin").hidden = false; return; }
  try {
    const me = await api("/api/me");
    $("who").textContent = `${me.subject} (${me.role})`;
    if (!me.can.includes("admin")) { say("The device registry is for administrators.", true); return; }
  } catch (err) {
    $("signin").hidden = false;
    say(err.message, true);
    return;
  }
  $("registry").hidden = false;
  load();
})();
