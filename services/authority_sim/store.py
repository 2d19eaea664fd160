"""The simulator's tables (asyncio-flavoured functions for `Database.run`)."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

import asyncpg

from services.authority_sim.rules import Registration
from shared.fleet import FleetDevice
from shared.messages.device import Invoice, TypeSummary


async def seed(conn: asyncpg.Connection, fleet_clock: str | None, started_at: datetime,
               devices: list[FleetDevice]) -> None:
    """Persist the clock seed once; the fleet file's declarations win at every start."""
    await conn.execute(
        "INSERT INTO authority_clock (id, fleet_clock, started_at) VALUES (true, $1, $2) "
        "ON CONFLICT (id) DO NOTHING",
        fleet_clock,
        started_at,
    )
    await conn.executemany(
        "INSERT INTO authority_taxpayers AS t (device_id, taxpayer_id, machine_no, family, branch_id,"
        " period, declared, comparison, pending_minutes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
        "ON CONFLICT (device_id) DO UPDATE SET taxpayer_id = excluded.taxpayer_id,"
        " machine_no = excluded.machine_no, family = excluded.family, branch_id = excluded.branch_id,"
        " period = excluded.period, declared = excluded.declared, comparison = excluded.comparison,"
        " pending_minutes = excluded.pending_minutes, updated_at = now()",
        [(d.id, d.taxpayer_id, d.machine_no, d.family, d.branch, d.period, d.declared, d.comparison,
          d.comparison_pending_minutes if d.comparison_pending_minutes >= 0 else None)
         for d in devices],
    )


async def clock_seed(conn: asyncpg.Connection) -> tuple[str | None, datetime] | None:
    row = await conn.fetchrow("SELECT fleet_clock, started_at FROM authority_clock WHERE id")
    return None if row is None else (row["fleet_clock"], row["started_at"])


async def registration(conn: asyncpg.Connection, device_id: str) -> Registration | None:
    row = await conn.fetchrow(
        "SELECT taxpayer_id, machine_no, period, declared, comparison, pending_minutes FROM authority_taxpayers "
        "WHERE device_id = $1",
        device_id,
    )
    return None if row is None else Registration(**dict(row))


async def registrations(conn: asyncpg.Connection, device_ids: list[str]) -> dict[str, Registration]:
    """Registrations of many devices at once (the batched status query)."""
    rows = await conn.fetch(
        "SELECT device_id, taxpayer_id, machine_no, period, declared, comparison, pending_minutes"
        " FROM authority_taxpayers WHERE device_id = ANY($1::text[])", device_ids)
    return {r["device_id"]: Registration(**{k: v for k, v in dict(r).items() if k != "device_id"}) for r in rows}


async def first_reports(conn: asyncpg.Connection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], datetime]:
    """When each (device, period)'s first summary reached the bureau."""
    rows = await conn.fetch(
        "SELECT r.device_id, r.period, min(r.received_at) AS at FROM authority_reports r"
        " JOIN unnest($1::text[], $2::text[]) AS k(device_id, period)"
        "   ON r.device_id = k.device_id AND r.period = k.period GROUP BY 1, 2",
        [k[0] for k in keys], [k[1] for k in keys])
    return {(r["device_id"], r["period"]): r["at"] for r in rows}


async def set_declaration(conn: asyncpg.Connection, device_id: str, declared: bool | None,
                          comparison: str | None) -> bool:
    # a comparison set by hand holds until changed again (no automatic pass after a while)
    result = await conn.execute(
        "UPDATE authority_taxpayers SET declared = coalesce($2, declared),"
        " comparison = coalesce($3, comparison),"
        " pending_minutes = CASE WHEN $3::text IS NULL THEN pending_minutes ELSE NULL END,"
        " updated_at = now() WHERE device_id = $1",
        device_id,
        declared,
        comparison,
    )
    return bool(result != "UPDATE 0")


async def take_fault(conn: asyncpg.Connection, op: str) -> str | None:
    """Use up one injected fault for `op` (a specific one before '*'); its error code, or None.

    One statement, so it needs no transaction block of its own (`Database.call`).
    """
    code = await conn.fetchval(
        "UPDATE authority_faults SET remaining = remaining - 1"
        " WHERE remaining > 0 AND op = (SELECT op FROM authority_faults WHERE op IN ($1, '*')"
        " AND remaining > 0 ORDER BY op = $1 DESC LIMIT 1 FOR UPDATE) RETURNING code",
        op,
    )
    return None if code is None else str(code)


async def put_faults(conn: asyncpg.Connection, op: str, count: int, code: str) -> None:
    await conn.execute(
        "INSERT INTO authority_faults (op, remaining, code) VALUES ($1, $2, $3) "
        "ON CONFLICT (op) DO UPDATE SET remaining = excluded.remaining, code = excluded.code",
        op,
        count,
        code,
    )


async def store_offline(conn: asyncpg.Connection, device_id: str, taxpayer_id: str, period: str,
                        invoices: list[Invoice]) -> None:
    await conn.executemany(
        "INSERT INTO authority_offline_invoices (device_id, taxpayer_id, period, invoice_type, code,"
        " number, invoice) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        [(device_id, taxpayer_id, period, i.invoice_type, i.code, i.number, i.model_dump_json())
         for i in invoices],
    )


async def store_reports(conn: asyncpg.Connection, device_id: str, taxpayer_id: str, machine_no: int,
                        period: str, summaries: list[TypeSummary]) -> None:
    """Store each type's summary; a repeated report keeps the first one."""
    await conn.executemany(
        "INSERT INTO authority_reports (device_id, taxpayer_id, machine_no, period, invoice_type,"
        " summary) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        [(device_id, taxpayer_id, machine_no, period, s.invoice_type, s.model_dump_json())
         for s in summaries],
    )


async def first_report(conn: asyncpg.Connection, device_id: str, period: str) -> datetime | None:
    """When the device's first summary of `period` reached the bureau, if it did."""
    at: datetime | None = await conn.fetchval(
        "SELECT min(received_at) FROM authority_reports WHERE device_id = $1 AND period = $2", device_id, period)
    return at


async def reported_types(conn: asyncpg.Connection, device_id: str, period: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT invoice_type FROM authority_reports WHERE device_id = $1 AND period = $2",
        device_id,
        period,
    )
    return {r["invoice_type"] for r in rows}


async def record_package(conn: asyncpg.Connection, payload: dict[str, Any], checksum: str) -> None:
    await conn.execute(
        "INSERT INTO authority_packages (package_id, device_id, taxpayer_id, machine_no, period,"
        " invoice_types, challenge, issued_at, next_lock_date, clock_block, checksum)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        payload["package_id"],
        payload["device_id"],
        payload["taxpayer_id"],
        payload["machine_no"],
        payload["period"],
        payload["invoice_types"],
        payload["challenge"],
        payload["issued_at"],
        date.fromisoformat(payload["next_lock_date"]),
        payload["clock_block"],
        checksum,
    )


async def packages(conn: asyncpg.Connection, device_id: str) -> list[dict[str, Any]]:
    """Packages issued for a device, oldest first (tests and the console)."""
    rows = await conn.fetch(
        "SELECT * FROM authority_packages WHERE device_id = $1 ORDER BY created_at, package_id", device_id
    )
    return [json.loads(json.dumps(dict(r), default=str)) for r in rows]
