"""Fleet operations: select devices across branches by filters and fan out per-branch clears.

Pure selection rules plus one asyncio-flavoured unit that writes the whole fan-out (requests,
devices, events, audit) in one transaction, idempotent by fleet id.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg

from services.coordinator.intake import accept
from shared.messages.clear import ClearRequest
from shared.messages.fleet import FleetFilters
from shared.status_words import STATUS_WORDS


@dataclass(frozen=True)
class Candidate:
    device_id: str
    branch_id: str
    family: str
    open_period: str | None
    lock_date: date | None
    types: dict[str, int]


def selected(device: Candidate, filters: FleetFilters, today: date, branch_ok: Callable[[str], bool]) -> bool:
    """Whether a fleet operation with `filters` covers `device`."""
    if not branch_ok(device.branch_id):
        return False
    if filters.families and device.family not in filters.families:
        return False
    types = {t: s for t, s in device.types.items() if not filters.invoice_types or t in filters.invoice_types}
    if filters.invoice_types and not types:
        return False
    if filters.statuses and not any(STATUS_WORDS.get(s) in filters.statuses for s in types.values()):
        return False
    return filters.within_days is None or (
        device.lock_date is not None and (device.lock_date - today).days <= filters.within_days)


def period_for(device: Candidate, requested: str | None, closed_before: str) -> str | None:
    """The period to clear: the requested one, or the device's open period once it is closed."""
    if requested:
        return requested
    if device.open_period and device.open_period <= closed_before:
        return device.open_period
    return None


def request_id_for(fleet_id: str, branch_id: str, period: str) -> str:
    """A stable per-branch request id (fan-out is idempotent)."""
    rid = f"{fleet_id}:{branch_id}:{period}"
    if len(rid) <= 64:
        return rid
    digest = hashlib.sha256(f"{branch_id}:{period}".encode()).hexdigest()[:12]
    return f"{fleet_id[:51]}:{digest}"


async def candidates(conn: asyncpg.Connection, branches: list[str] | None,
                     device_ids: list[str] | None = None) -> list[Candidate]:
    """Registered devices (optionally of some branches or ids)."""
    rows = await conn.fetch(
        "SELECT device_id, branch_id, family, open_period, lock_date, type_status FROM devices_for_coordinator"
        " WHERE ($1::text[] IS NULL OR branch_id = ANY($1)) AND ($2::text[] IS NULL OR device_id = ANY($2))"
        " ORDER BY branch_id, device_id", branches, device_ids)
    out = []
    for r in rows:
        raw = r["type_status"]
        types = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
        out.append(Candidate(r["device_id"], r["branch_id"], r["family"], r["open_period"], r["lock_date"],
                             {str(k): int(v) for k, v in types.items()}))
    return out


def group(devices: list[Candidate], requested: str | None, closed_before: str) -> dict[tuple[str, str], list[str]]:
    """(branch, period) -> device ids."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for device in devices:
        period = period_for(device, requested, closed_before)
        if period is not None:
            groups[(device.branch_id, period)].append(device.device_id)
    return groups


async def fan_out(
    conn: asyncpg.Connection, *, fleet_id: str, subject: str, filters: dict[str, Any],
    groups: dict[tuple[str, str], list[str]], invoice_types: list[str], trace_id: str,
    traceparent: str | None, lease: float,
) -> list[str] | None:
    """Write the fleet operation and its per-branch requests; None if the fleet id was used before."""
    row = await conn.fetchrow(
        "INSERT INTO fleet_operations (fleet_id, subject, filters) VALUES ($1, $2, $3::jsonb)"
        " ON CONFLICT DO NOTHING RETURNING 1", fleet_id, subject, json.dumps(filters))
    if row is None:
        return None
    request_ids = []
    for (branch_id, period), device_ids in sorted(groups.items()):
        rid = request_id_for(fleet_id, branch_id, period)
        request = ClearRequest(request_id=rid, branch_id=branch_id, period=period, device_ids=device_ids,
                               invoice_types=invoice_types, mode="auto")
        if await accept(conn, request=request, subject=subject, trace_id=trace_id, traceparent=traceparent,
                        reply_to=None, correlation_id=None, device_ids=device_ids, owner=None,
                        lease=lease, fleet_id=fleet_id):
            request_ids.append(rid)
    await conn.execute("UPDATE fleet_operations SET request_ids = $2 WHERE fleet_id = $1", fleet_id, request_ids)
    return request_ids
