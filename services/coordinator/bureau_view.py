"""What the bureau said about a device's period (filing, comparison), kept beside the device.

Recorded by the coordinator where it already asks the bureau (a clear's declaration check, a
refusal of the write-back package) and by the leader's scheduled refresh (bureau_watch.py),
so `clearcard status`, the HTTP API and the console read a table instead of calling the bureau
per device per page view. Functions taking a connection are asyncio-flavoured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import asyncpg

from shared.errors import ErrorCode
from shared.messages.authority import DeclarationStatus

Filing = Literal["filed", "not_filed", "unknown"]
Comparison = Literal["pass", "fail", "pending", "unknown"]

# a clear that stopped on the bureau's answer tells what the bureau said
VIEW_OF_REFUSAL: dict[str, tuple[Filing, Comparison]] = {
    ErrorCode.NOT_DECLARED: ("not_filed", "pending"),
    ErrorCode.COMPARISON_FAILED: ("filed", "fail"),
    ErrorCode.COMPARISON_PENDING: ("filed", "pending"),
}


def view_of(status: DeclarationStatus) -> tuple[Filing, Comparison]:
    """The bureau's answer in the status words of contract §2."""
    return ("filed" if status.declared else "not_filed"), status.comparison


async def record(conn: asyncpg.Connection, rows: Sequence[tuple[str, str, str, str]], source: str) -> None:
    """Upsert (device_id, period, filing, comparison) rows as of now."""
    await conn.executemany(
        "INSERT INTO bureau_views (device_id, period, filing, comparison, source, checked_at)"
        " VALUES ($1, $2, $3, $4, $5, now()) ON CONFLICT (device_id, period) DO UPDATE SET"
        " filing = excluded.filing, comparison = excluded.comparison, source = excluded.source,"
        " checked_at = now()",
        [(*row, source) for row in rows])


async def record_refusal(conn: asyncpg.Connection, device_id: str, period: str, code: str | None) -> None:
    """A clear ended on the bureau's refusal: remember what it said (other outcomes change nothing)."""
    view = VIEW_OF_REFUSAL.get(code or "")
    if view is not None:
        await record(conn, [(device_id, period, *view)], "clear")


async def record_state(conn: asyncpg.Connection, device_id: str, period: str, state: dict[str, object]) -> None:
    """A declaration check passed: the step's state carries the bureau's answer."""
    bureau = state.get("bureau")
    if isinstance(bureau, dict):
        await record(conn, [(device_id, period, str(bureau["filing"]), str(bureau["comparison"]))], "clear")
