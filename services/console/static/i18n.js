// The console's language: zh-CN by default, English one click away, the choice remembered.
// Words come from the shared catalogue (GET /i18n/{locale}); a message id is its English text.
"use strict";

const LANG_KEY = "clearcard.locale";
const i18n = { locale: localStorage.getItem(LANG_KEY) || "zh-CN", messages: {}, errors: {} };

// Marks a text for the catalogue where it is translated later (extracted like `t`).
const N_ = (text) => text;

function t(text, params = {}) {
  const words = i18n.messages[text] || text;
  return words.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
}

function errorWords(code) {
  return i18n.errors[code] || code;
}

// Dates and times are always China time (Asia/Shanghai), whatever the browser's zone.
function chinaTime(iso, withSeconds = false) {
  if (!iso) return "";
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return String(iso);
  const parts = new Intl.DateTimeFormat("en-CA", { timeZone: "Asia/Shanghai", year: "numeric", month: "2-digit",
    day: "2-digit", hour: "2-digit", minute: "2-digit", second: withSeconds ? "2-digit" : undefined, hourCycle: "h23" })
    .formatToParts(when).reduce((acc, p) => ({ ...acc, [p.type]: p.value }), {});
  return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}${withSeconds ? `:${parts.second}` : ""}`;
}

function translatePage() {
  document.documentElement.lang = i18n.locale;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of document.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  document.getElementById("language").textContent = i18n.locale === "zh-CN" ? "English" : "中文";
  document.title = `ClearCard ${t("report and clear")}`;
}

async function loadLanguage(locale) {
  const answer = await fetch(`/i18n/${locale}`);
  const catalogue = await answer.json();
  i18n.locale = locale;
  i18n.messages = catalogue.messages;
  i18n.errors = catalogue.errors;
  localStorage.setItem(LANG_KEY, locale);
  translatePage();
}
