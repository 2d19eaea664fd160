"""Fully digital e-invoices (数电发票): the monthly summary confirmation, its store and simulator.

A taxpayer on fully digital invoices has no device and so no clear; its remaining monthly step
is confirming the month's summary (count, amount and tax of blue and red invoices) by the
filing deadline. The bureau's side is not public, so `simulate_month` plays it: it produces the
month's totals deterministically from the taxpayer and period, as the bureau would present them.
Functions taking a connection are asyncio-flavoured: run them through `Database.run`.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from shared.errors import ClearCardError, ErrorCode
from shared.messages.base import taxpayer_id_valid
from shared.tax_calendar import DEFAULT, TaxCalendar

_CENT = Decimal("0.01")
VAT_RATE = Decimal("0.13")


def filing_deadline(period: str, calendar: TaxCalendar = DEFAULT) -> date:
    """The month's filing deadline in the tax calendar (the 15th unless holidays move it)."""
    return calendar.deadline(period)


def simulated_totals(taxpayer_id: str, period: str) -> dict[str, Any]:
    """The month's blue and red invoice totals the bureau would present (deterministic)."""
    digest = hashlib.sha256(f"{taxpayer_id}/{period}".encode()).digest()
    blue_count = 20 + digest[0] % 180
    red_count = digest[1] % 6
    blue_amount = (Decimal(int.from_bytes(digest[2:6], "big") % 50_000_000) / 100 + blue_count * 100).quantize(_CENT)
    red_amount = -(Decimal(int.from_bytes(digest[6:9], "big") % 500_000) / 100 * red_count).quantize(_CENT)
    return {
        "blue_count": blue_count, "blue_amount": blue_amount, "blue_tax": (blue_amount * VAT_RATE).quantize(_CENT),
        "red_count": red_count, "red_amount": red_amount, "red_tax": (red_amount * VAT_RATE).quantize(_CENT),
    }


async def add_taxpayer(conn: asyncpg.Connection, taxpayer_id: str, name: str, branch_id: str) -> None:
    """Register (or rename / move) a taxpayer on fully digital invoices."""
    if not taxpayer_id_valid(taxpayer_id):
        raise ClearCardError(ErrorCode.INVALID_REQUEST, f"{taxpayer_id!r} is not a valid unified social credit code")
    await conn.execute(
        "INSERT INTO digital_taxpayers (taxpayer_id, name, branch_id) VALUES ($1, $2, $3)"
        " ON CONFLICT (taxpayer_id) DO UPDATE SET name = EXCLUDED.name, branch_id = EXCLUDED.branch_id",
        taxpayer_id, name, branch_id)


async def simulate_month(conn: asyncpg.Connection, taxpayer_id: str, period: str,
                         calendar: TaxCalendar = DEFAULT) -> dict[str, Any]:
    """The bureau publishes the month's summary for confirmation; a confirmed month is left as it is."""
    totals = simulated_totals(taxpayer_id, period)
    exists = await conn.fetchval("SELECT 1 FROM digital_taxpayers WHERE taxpayer_id = $1", taxpayer_id)
    if not exists:
        raise ClearCardError(ErrorCode.INVALID_REQUEST, f"taxpayer {taxpayer_id} is not on digital invoices")
    await conn.execute(
        "INSERT INTO digital_confirmations (taxpayer_id, period, blue_count, blue_amount, blue_tax,"
        " red_count, red_amount, red_tax, deadline) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " ON CONFLICT (taxpayer_id, period) DO NOTHING",
        taxpayer_id, period, totals["blue_count"], totals["blue_amount"], totals["blue_tax"],
        totals["red_count"], totals["red_amount"], totals["red_tax"], filing_deadline(period, calendar))
    row = await _one(conn, taxpayer_id, period)
    assert row is not None
    return row


async def confirm_month(conn: asyncpg.Connection, taxpayer_id: str, period: str, subject: str) -> dict[str, Any]:
    """Confirm a month's summary (once; confirming again returns the earlier confirmation)."""
    row = await _one(conn, taxpayer_id, period)
    if row is None:
        raise ClearCardError(ErrorCode.INVALID_REQUEST, f"no summary of {period} for taxpayer {taxpayer_id} yet")
    if row["status"] == "confirmed":
        return row
    await conn.execute(
        "UPDATE digital_confirmations SET status = 'confirmed', confirmed_by = $3, confirmed_at = now(),"
        " updated_at = now() WHERE taxpayer_id = $1 AND period = $2 AND status = 'pending'",
        taxpayer_id, period, subject)
    confirmed = await _one(conn, taxpayer_id, period)
    assert confirmed is not None
    return confirmed


_SELECT = (
    "SELECT c.taxpayer_id, t.name, t.branch_id, c.period, c.blue_count, c.blue_amount, c.blue_tax,"
    " c.red_count, c.red_amount, c.red_tax, c.deadline, c.status, c.confirmed_by, c.confirmed_at"
    " FROM digital_confirmations c JOIN digital_taxpayers t USING (taxpayer_id)"
)


async def _one(conn: asyncpg.Connection, taxpayer_id: str, period: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(_SELECT + " WHERE c.taxpayer_id = $1 AND c.period = $2", taxpayer_id, period)
    return None if row is None else _plain(row)


async def list_confirmations(conn: asyncpg.Connection, branch_id: str | None = None,
                             period: str | None = None) -> list[dict[str, Any]]:
    """Every monthly confirmation (newest period first), optionally of one branch or period."""
    rows = await conn.fetch(
        _SELECT + " WHERE ($1::text IS NULL OR t.branch_id = $1) AND ($2::text IS NULL OR c.period = $2)"
        " ORDER BY c.period DESC, t.branch_id, c.taxpayer_id", branch_id, period)
    return [_plain(r) for r in rows]


def _plain(row: asyncpg.Record) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in dict(row).items():
        if isinstance(value, Decimal):
            out[key] = f"{value:.2f}"
        elif isinstance(value, datetime | date):
            out[key] = value.isoformat()
        else:
            out[key] = value
    return out


def with_countdown(rows: list[dict[str, Any]], today: date) -> list[dict[str, Any]]:
    """Each row with `days_left` to its deadline (pending rows only; confirmed ones need nothing)."""
    return [{**r, "days_left": (date.fromisoformat(r["deadline"]) - today).days if r["status"] == "pending"
             else None} for r in rows]
