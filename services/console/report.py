"""A period's results per branch and per device, for finance teams' reports (CSV and Excel).

Rows come a page at a time (keyset pagination on branch and device), so a report of tens of
thousands of devices never sits whole in memory; the summary is aggregated in PostgreSQL (one row
per branch). Words (headers, outcomes, families, failure reasons) come from the shared catalogue.

Functions taking a connection are asyncio-flavoured: run them through `Database.run`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg

from services.console.month import CLEARED_FOR_PERIOD
from shared.china_time import format_china
from shared.db import Database
from shared.i18n import N_, Locale, error_words, gettext, translated_message

PAGE = 2000

_DEVICES = """
SELECT d.device_id, d.branch_id, d.family, d.taxpayer_id, d.machine_no, d.type_status, d.lock_date,
       """ + CLEARED_FOR_PERIOD + """ AS cleared_now,
       l.request_id, l.outcome, l.error_code, l.error_message, l.updated_at,
       b.backup_id, b.taken_at, cardinality(b.locations) AS copies
FROM devices_for_console d
LEFT JOIN LATERAL (
    SELECT dc.request_id, dc.outcome, dc.error_code, dc.error_message, dc.updated_at
    FROM device_clears_for_console dc JOIN clear_requests_for_console r USING (request_id)
    WHERE dc.device_id = d.device_id AND r.period = $1 ORDER BY dc.updated_at DESC LIMIT 1) l ON true
LEFT JOIN LATERAL (
    SELECT backup_id, taken_at, locations FROM backups_for_console
    WHERE device_id = d.device_id AND period = $1 ORDER BY taken_at DESC LIMIT 1) b ON true
WHERE ($2::text[] IS NULL OR d.branch_id = ANY($2::text[])) AND (d.branch_id, d.device_id) > ($3, $4)
ORDER BY d.branch_id, d.device_id
LIMIT $5
"""

_SUMMARY = """
WITH latest AS (
    SELECT DISTINCT ON (dc.device_id) dc.device_id, dc.outcome, dc.error_code
    FROM device_clears_for_console dc JOIN clear_requests_for_console r USING (request_id)
    WHERE r.period = $1 AND ($2::text[] IS NULL OR r.branch_id = ANY($2::text[]))
    ORDER BY dc.device_id, dc.updated_at DESC
), states AS (
    SELECT d.branch_id, d.device_id, d.lock_date, """ + CLEARED_FOR_PERIOD + """ AS cleared_now,
           l.device_id IS NOT NULL AS tried, l.outcome, l.error_code
    FROM devices_for_console d LEFT JOIN latest l USING (device_id)
    WHERE $2::text[] IS NULL OR d.branch_id = ANY($2::text[])
)
SELECT s.branch_id, count(*) AS devices,
       count(*) FILTER (WHERE cleared_now) AS cleared,
       count(*) FILTER (WHERE NOT cleared_now AND outcome = 'failed') AS failed,
       count(*) FILTER (WHERE NOT cleared_now AND tried AND outcome IS NULL) AS running,
       count(*) FILTER (WHERE NOT cleared_now AND NOT tried) AS not_started,
       min(lock_date) FILTER (WHERE NOT cleared_now) AS earliest_lock_date,
       (SELECT count(*) FROM backups_for_console b JOIN devices_for_console d2 USING (device_id)
        WHERE b.period = $1 AND d2.branch_id = s.branch_id) AS backups
FROM states s GROUP BY s.branch_id ORDER BY s.branch_id
"""

_REASONS = """
SELECT DISTINCT ON (dc.device_id) r.branch_id, dc.device_id, dc.error_code
FROM device_clears_for_console dc JOIN clear_requests_for_console r USING (request_id)
WHERE r.period = $1 AND ($2::text[] IS NULL OR r.branch_id = ANY($2::text[]))
ORDER BY dc.device_id, dc.updated_at DESC
"""
_REASON_COUNTS = """
SELECT l.branch_id, l.error_code, count(*) AS n
FROM (""" + _REASONS + """) l JOIN devices_for_console d USING (device_id)
WHERE l.error_code IS NOT NULL AND NOT """ + CLEARED_FOR_PERIOD + """
GROUP BY 1, 2
"""

FAMILY_WORDS = {"ukey": N_("tax UKey"), "golden_tax_disk": N_("golden tax disk"),
                "tax_control_disk": N_("tax control disk")}
OUTCOME_WORDS = {"cleared": N_("cleared"), "already_cleared": N_("already cleared"), "failed": N_("failed"),
                 "skipped": N_("skipped"), "running": N_("in progress"), "not_started": N_("not started")}
STATUS_WORDS = {0: N_("needs report"), 1: N_("reported"), 2: N_("cleared")}

DEVICE_COLUMNS = (N_("Branch"), N_("Device"), N_("Family"), N_("Taxpayer ID"), N_("Machine no."), N_("Outcome"),
                  N_("Error code"), N_("Reason"), N_("Detail"), N_("Invoice types"), N_("Lock date"),
                  N_("Last attempt (China time)"), N_("Request"), N_("Backup"), N_("Backup taken (China time)"),
                  N_("Backup copies"))
SUMMARY_COLUMNS = (N_("Branch"), N_("Device count"), N_("Cleared"), N_("Failed"), N_("In progress"), N_("Not started"),
                   N_("Earliest lock date (uncleared)"), N_("Backup count"), N_("Failure reasons"))


@dataclass(frozen=True)
class Report:
    """Which period and branches, in which language."""

    period: str
    branches: set[str] | None
    locale: Locale

    def words(self, text: str) -> str:
        return gettext(text, self.locale)

    def headers(self, columns: tuple[str, ...]) -> list[str]:
        return [self.words(c) for c in columns]


def outcome_of(row: asyncpg.Record) -> str:
    """The device's outcome for the period: the device's own word first, then its latest clear."""
    if row["cleared_now"]:
        return "cleared" if row["outcome"] == "cleared" else "already_cleared"
    if row["request_id"] is None:
        return "not_started"
    return str(row["outcome"] or "running")


def device_line(report: Report, row: asyncpg.Record) -> list[Any]:
    """One device's row of the report, in the report's language (dates stay dates for Excel)."""
    raw = row["type_status"]
    statuses = json.loads(raw) if isinstance(raw, str) else (raw or {})
    types = " ".join(f"{code}:{report.words(STATUS_WORDS.get(int(v), str(v)))}" for code, v in sorted(statuses.items()))
    outcome = outcome_of(row)
    failed = outcome in ("failed", "skipped", "running") and row["error_code"]
    code = row["error_code"] if failed else None
    return [row["branch_id"], row["device_id"], report.words(FAMILY_WORDS.get(row["family"], row["family"])),
            row["taxpayer_id"], row["machine_no"], report.words(OUTCOME_WORDS[outcome]), code or "",
            error_words(code, report.locale) if code else "",
            translated_message(code, row["error_message"], report.locale) if code and row["error_message"] else "",
            types, row["lock_date"], format_china(row["updated_at"], seconds=True), row["request_id"] or "",
            row["backup_id"] or "", format_china(row["taken_at"], seconds=True), row["copies"] or 0]


async def device_page(conn: asyncpg.Connection, report: Report, after: tuple[str, str],
                      limit: int = PAGE) -> list[asyncpg.Record]:
    """The next page of devices after (branch, device)."""
    return list(await conn.fetch(_DEVICES, report.period, sorted(report.branches) if report.branches is not None
                                 else None, after[0], after[1], limit))


async def device_lines(db: Database, report: Report, page: int = PAGE) -> AsyncIterator[list[list[Any]]]:
    """Every device's row, a page at a time, branch by branch."""
    after = ("", "")
    while True:
        rows = await db.run(device_page, report, after, page)
        if not rows:
            return
        yield [device_line(report, r) for r in rows]
        after = (rows[-1]["branch_id"], rows[-1]["device_id"])
        if len(rows) < page:
            return


async def summary_rows(conn: asyncpg.Connection, report: Report) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    """Per branch counts, and (branch, error code, devices) of the failures not since cleared."""
    branches = sorted(report.branches) if report.branches is not None else None
    return (list(await conn.fetch(_SUMMARY, report.period, branches)),
            list(await conn.fetch(_REASON_COUNTS, report.period, branches)))


async def summary_lines(db: Database, report: Report) -> list[list[Any]]:
    """One row per branch: devices, cleared, failed (with reasons), lock dates, backups."""
    counts, reasons = await db.run(summary_rows, report)
    by_branch: dict[str, list[tuple[str, int]]] = {}
    for r in reasons:
        by_branch.setdefault(r["branch_id"], []).append((r["error_code"], int(r["n"])))
    lines = []
    for r in counts:
        earliest: date | None = r["earliest_lock_date"]
        why = sorted(by_branch.get(r["branch_id"], []), key=lambda cn: (-cn[1], cn[0]))
        lines.append([r["branch_id"], r["devices"], r["cleared"], r["failed"], r["running"], r["not_started"],
                      earliest, r["backups"],
                      "; ".join(f"{error_words(code, report.locale)} ({code} ×{n})" for code, n in why)])
    return lines
