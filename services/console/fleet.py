"""Reading the fleet for the console: devices with their countdown, history and clear timelines.

Functions taking a connection are asyncio-flavoured: run them through `Database.run`.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from shared.deadlines import RISKS, Thresholds
from shared.fleet_status import COLUMNS, bureau_join, shape
from shared.fleet_status import today as fleet_today

# the views the coordinator, gateway and bureau simulator publish for the console (0070_published_views.sql)
BUREAU_JOIN = bureau_join("bureau_views_for_console")
CLOCK = "authority_clock_for_console"


async def today(conn: asyncpg.Connection) -> date:
    """The date countdowns count from (the emulated fleet clock when one runs)."""
    return await fleet_today(conn, CLOCK)


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime | date) else value


async def devices(conn: asyncpg.Connection, as_of: date, thresholds: Thresholds,
                  branches: set[str] | None = None) -> list[dict[str, Any]]:
    """Every device (of `branches`, None = all): the status shape of contract §2 and its last clear."""
    rows = await conn.fetch(
        f"""
        SELECT {COLUMNS},
               c.request_id AS last_request_id, c.step AS last_step, c.outcome AS last_outcome,
               c.error_code AS last_error_code, c.updated_at AS last_clear_at
        FROM devices_for_console d {BUREAU_JOIN}
        LEFT JOIN LATERAL (
            SELECT request_id, step, outcome, error_code, updated_at FROM device_clears_for_console dc
            WHERE dc.device_id = d.device_id ORDER BY updated_at DESC LIMIT 1) c ON true
        WHERE $1::text[] IS NULL OR d.branch_id = ANY($1::text[])
        ORDER BY d.branch_id, d.device_id
        """, sorted(branches) if branches is not None else None)
    out = []
    for r in rows:
        device = shape(r, as_of, thresholds)
        device["gateway_id"] = r["gateway_id"]
        device["last_clear"] = None if r["last_request_id"] is None else {
            "request_id": r["last_request_id"], "step": r["last_step"], "outcome": r["last_outcome"],
            "error_code": r["last_error_code"], "at": _iso(r["last_clear_at"])}
        out.append(device)
    return out


def matches(device: dict[str, Any], *, family: str | None, status: str | None, max_days: int | None,
            filing: str | None = None, comparison: str | None = None) -> bool:
    """The fleet view's filters: family, a per-type status or risk colour, days left, the bureau's view."""
    if family and device["family"] != family:
        return False
    if status:
        if status in RISKS:
            if device["risk"] != status:
                return False
        elif status not in device["types"].values():
            return False
    if filing and device["filing"] != filing:
        return False
    if comparison and device["comparison"] != comparison:
        return False
    return max_days is None or (device["days_left"] is not None and device["days_left"] <= max_days)


def by_branch(rows: list[dict[str, Any]], digital: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Devices and digital-invoice confirmations grouped by branch, with counts per risk colour."""
    branches: dict[str, dict[str, Any]] = {}

    def branch(name: str) -> dict[str, Any]:
        return branches.setdefault(name, {"branch_id": name, "devices": [], "digital": [],
                                          "counts": dict.fromkeys(RISKS, 0)})

    for device in rows:
        b = branch(device["branch_id"])
        b["devices"].append(device)
        b["counts"][device["risk"]] += 1
    for confirmation in digital:
        branch(confirmation["branch_id"])["digital"].append(confirmation)
    for b in branches.values():
        days = [d["days_left"] for d in b["devices"] if d["days_left"] is not None]
        b["min_days_left"] = min(days) if days else None
    return [branches[k] for k in sorted(branches)]


async def device_row(conn: asyncpg.Connection, device_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT device_id, branch_id, gateway_id FROM devices_for_console WHERE device_id = $1",
                               device_id)


async def history(conn: asyncpg.Connection, device_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """The device's clears, newest first, with their request's period and mode."""
    rows = await conn.fetch(
        """
        SELECT dc.request_id, r.period, r.mode, r.subject, r.trace_id, dc.step, dc.outcome, dc.error_code,
               dc.error_message, dc.backup_id, r.created_at, dc.updated_at
        FROM device_clears_for_console dc JOIN clear_requests_for_console r USING (request_id)
        WHERE dc.device_id = $1 ORDER BY r.created_at DESC LIMIT $2
        """, device_id, limit)
    return [{k: _iso(v) for k, v in dict(r).items()} for r in rows]


async def request_row(conn: asyncpg.Connection, request_id: str) -> dict[str, Any] | None:
    """A clear request with its devices' current step and outcome."""
    row = await conn.fetchrow(
        "SELECT request_id, branch_id, period, mode, invoice_types, subject, trace_id, status, finished_event,"
        " created_at, finished_at FROM clear_requests_for_console WHERE request_id = $1", request_id)
    if row is None:
        return None
    devices_ = await conn.fetch(
        "SELECT device_id, step, outcome, error_code, error_message, backup_id, updated_at"
        " FROM device_clears_for_console"
        " WHERE request_id = $1 ORDER BY device_id", request_id)
    out = {k: _iso(v) for k, v in dict(row).items()}
    raw = out.get("finished_event")
    out["finished_event"] = json.loads(raw) if isinstance(raw, str) else raw
    out["devices"] = [{k: _iso(v) for k, v in dict(d).items()} for d in devices_]
    return out


def timeline(request: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per device, each step reached with when and how long it took (from the audit log)."""
    steps: dict[str, list[dict[str, Any]]] = {d["device_id"]: [] for d in request["devices"]}
    previous: dict[str, str] = {}
    accepted = next((r["at"] for r in records if r.get("action") == "clear.accepted"), request["created_at"])
    for record in sorted(records, key=lambda r: (str(r.get("at")), r.get("seq") or 0)):
        device = record.get("device_id")
        action = str(record.get("action") or "")
        if not device or not (action.startswith("step.") or action == "device.finished"):
            continue
        at = str(record["at"])
        since = previous.get(device, accepted)
        steps.setdefault(device, []).append({
            "step": action.removeprefix("step.") if action != "device.finished" else "finished",
            "at": at, "seconds": _seconds(since, at), "outcome": record.get("outcome"),
            "error_code": record.get("error_code")})
        previous[device] = at
    return [{**d, "steps": steps.get(d["device_id"], [])} for d in request["devices"]]


def _seconds(start: str, end: str) -> float | None:
    try:
        return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 3)
    except (TypeError, ValueError):
        return None


async def clock_offset(conn: asyncpg.Connection) -> timedelta:
    """How far the emulated fleet clock runs from real time (zero without one): what shifts a
    recorded moment onto the fleet's calendar."""
    row = await conn.fetchrow("SELECT fleet_clock, started_at FROM authority_clock_for_console WHERE id")
    if row is not None and row["fleet_clock"]:
        return datetime.fromisoformat(row["fleet_clock"]) - row["started_at"]
    return timedelta(0)
