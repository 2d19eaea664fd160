"""PostgreSQL access for the coordinator, as asyncio functions run through Database.run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.text import clean_text, clean_tree

LEASE_SECONDS = 15.0  # default; the runner passes CoordinatorConfig.lease_seconds
CLAIM_LOCK = 0x434C4D31  # one claimer at a time, so one device never runs two clears at once
# a write of the lease holder: the owner and fencing number it claimed with, the clear still open
FENCE = "lease_owner = {owner} AND lease_epoch = {epoch} AND outcome IS NULL"


class LeaseLost(Exception):
    """Another coordinator holds this device clear now (our lease expired and was claimed, or it
    finished): this one stops driving it and writes nothing more for it."""

    def __init__(self, work: Work) -> None:
        super().__init__(f"lease on {work.request_id}/{work.device_id} (fencing number {work.lease_epoch}) is lost")
        self.work = work


@dataclass(frozen=True)
class RegisteredDevice:
    device_id: str
    branch_id: str
    family: str
    gateway_id: str | None  # None: enrolled, but no gateway has seen the device yet
    taxpayer_id: str
    machine_no: int


@dataclass(frozen=True)
class Work:
    """One device of one request, claimed by this coordinator."""

    request_id: str
    device_id: str
    step: str
    state: dict[str, Any]
    period: str
    invoice_types: tuple[str, ...]
    subject: str
    trace_id: str
    traceparent: str | None
    branch_id: str
    gateway_id: str | None  # None: no gateway has seen the device yet
    family: str
    taxpayer_id: str
    machine_no: int
    cancelled: bool = False
    writeback_started: bool = False
    # False when the device was retired after the request was accepted: its `devices` row is gone
    in_service: bool = True
    lease_owner: str | None = None  # who holds the lease, and with which fencing number (leases.py)
    lease_epoch: int = 0


async def branch_devices(conn: asyncpg.Connection, branch_id: str) -> list[RegisteredDevice]:
    rows = await conn.fetch(
        "SELECT device_id, branch_id, family, gateway_id, taxpayer_id, machine_no FROM devices_for_coordinator "
        "WHERE branch_id = $1 ORDER BY device_id", branch_id)
    return [RegisteredDevice(**dict(r)) for r in rows]


async def find_request(conn: asyncpg.Connection, request_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM clear_requests WHERE request_id = $1", request_id)


async def record_finished_answer(
    conn: asyncpg.Connection, request_id: str, branch_id: str, period: str, mode: str,
    subject: str, trace_id: str, event: dict[str, Any],
) -> bool:
    """Store a request answered at once (preview, refusal); False if the id was already used."""
    row = await conn.fetchrow(
        "INSERT INTO clear_requests (request_id, branch_id, period, mode, subject, trace_id, status,"
        " finished_event, finished_at) VALUES ($1,$2,$3,$4,$5,$6,'finished',$7::jsonb, now())"
        " ON CONFLICT (request_id) DO NOTHING RETURNING 1",
        request_id, branch_id, period, mode, subject, trace_id, json.dumps(event))
    return row is not None


async def accept_request(
    conn: asyncpg.Connection, *, request_id: str, branch_id: str, period: str, mode: str,
    invoice_types: list[str], subject: str, trace_id: str, traceparent: str | None,
    reply_to: str | None, correlation_id: str | None, device_ids: list[str], owner: str | None,
    lease: float = LEASE_SECONDS, fleet_id: str | None = None,
) -> bool:
    """Persist an accepted request and its devices, leased to `owner`; False if the id exists."""
    row = await conn.fetchrow(
        "INSERT INTO clear_requests (request_id, branch_id, period, mode, invoice_types, subject,"
        " trace_id, traceparent, reply_to, correlation_id, fleet_id)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) ON CONFLICT (request_id) DO NOTHING RETURNING 1",
        request_id, branch_id, period, mode, invoice_types, subject, trace_id, traceparent,
        reply_to, correlation_id, fleet_id)
    if row is None:
        return False
    if owner is not None:
        # one clear per device at a time: a device with another open clear waits unleased
        await conn.execute("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK)
        busy = {r["device_id"] for r in await conn.fetch(
            "SELECT DISTINCT device_id FROM device_clears WHERE device_id = ANY($1) AND outcome IS NULL",
            device_ids)}
        await conn.executemany(
            "INSERT INTO device_clears (request_id, device_id, step) VALUES ($1, $2, 'authorized')",
            [(request_id, d) for d in device_ids if d in busy])
        device_ids = [d for d in device_ids if d not in busy]
    await conn.executemany(
        "INSERT INTO device_clears (request_id, device_id, step, lease_owner, lease_until, lease_epoch)"
        " VALUES ($1, $2, 'authorized', $3,"
        " CASE WHEN $3::text IS NULL THEN NULL ELSE now() + make_interval(secs => $4) END,"
        " CASE WHEN $3::text IS NULL THEN 0 ELSE 1 END)",
        [(request_id, d, owner, lease) for d in device_ids])
    return True


WORK_COLUMNS = (
    "d.request_id, d.device_id, d.step, d.state, r.period, r.invoice_types, r.subject, r.trace_id,"
    " r.traceparent, r.branch_id, v.gateway_id, coalesce(v.family, '') AS family,"
    " coalesce(v.taxpayer_id, '') AS taxpayer_id, coalesce(v.machine_no, 0) AS machine_no, r.cancelled,"
    " d.writeback_started, v.device_id IS NOT NULL AS in_service, d.lease_owner, d.lease_epoch"
)


def work_of(row: asyncpg.Record) -> Work:
    values = dict(row)
    values["state"] = json.loads(values["state"]) if isinstance(values["state"], str) else values["state"]
    values["invoice_types"] = tuple(values["invoice_types"] or ())
    return Work(**values)


async def leased_work(conn: asyncpg.Connection, request_id: str, owner: str) -> list[Work]:
    rows = await conn.fetch(
        f"SELECT {WORK_COLUMNS} FROM device_clears d JOIN clear_requests r USING (request_id)"
        " LEFT JOIN devices_for_coordinator v ON v.device_id = d.device_id"
        " WHERE d.request_id = $1 AND d.lease_owner = $2 AND d.outcome IS NULL", request_id, owner)
    return [work_of(r) for r in rows]


async def save_step(conn: asyncpg.Connection, work: Work, step: str, state: dict[str, Any],
                    backup_id: str | None = None, lease: float = LEASE_SECONDS) -> bool:
    """Persist a finished step (fenced); returns whether the request has been cancelled meanwhile."""
    row = await conn.fetchrow(
        "UPDATE device_clears SET step = $3, state = $4::jsonb, backup_id = COALESCE($5, backup_id),"
        " updated_at = now(), lease_until = now() + make_interval(secs => $6)"
        f" WHERE request_id = $1 AND device_id = $2 AND {FENCE.format(owner='$7', epoch='$8')}"
        " RETURNING (SELECT cancelled FROM clear_requests WHERE request_id = $1) AS cancelled",
        work.request_id, work.device_id, step, json.dumps(clean_tree(state)), backup_id, float(lease),
        work.lease_owner, work.lease_epoch)
    if row is None:
        raise LeaseLost(work)
    return bool(row["cancelled"])


async def begin_writeback(conn: asyncpg.Connection, work: Work) -> bool:
    """Commit to the write-back unless the request was cancelled (serialized with cancel_request)."""
    cancelled = await conn.fetchval(
        "SELECT cancelled FROM clear_requests WHERE request_id = $1 FOR SHARE", work.request_id)
    if cancelled:
        return False
    started = await conn.fetchrow(
        "UPDATE device_clears SET writeback_started = true"
        f" WHERE request_id = $1 AND device_id = $2 AND {FENCE.format(owner='$3', epoch='$4')} RETURNING 1",
        work.request_id, work.device_id, work.lease_owner, work.lease_epoch)
    if started is None:
        raise LeaseLost(work)
    return True


async def cancel_request(conn: asyncpg.Connection, request_id: str) -> tuple[bool, list[str]]:
    """Mark a running request cancelled; returns (was running, devices already writing back)."""
    row = await conn.fetchrow(
        "UPDATE clear_requests SET cancelled = true WHERE request_id = $1 AND status = 'running'"
        " RETURNING request_id", request_id)
    if row is None:
        return False, []
    started = await conn.fetch(
        "SELECT device_id FROM device_clears WHERE request_id = $1 AND writeback_started", request_id)
    return True, [r["device_id"] for r in started]


async def finish_device(
    conn: asyncpg.Connection, work: Work, outcome: str, error_code: str | None,
    error_message: str | None,
) -> tuple[bool, list[asyncpg.Record] | None]:
    """Record a device's outcome (fenced): (whether this call recorded it, every device row if that
    completed the request). Raises LeaseLost when another driver holds (or finished) it."""
    updated = await conn.fetchrow(
        "UPDATE device_clears SET outcome = $3, error_code = $4, error_message = $5,"
        " updated_at = now(), lease_owner = NULL, lease_until = NULL"
        f" WHERE request_id = $1 AND device_id = $2 AND {FENCE.format(owner='$6', epoch='$7')} RETURNING 1",
        work.request_id, work.device_id, outcome, error_code,
        clean_text(error_message) if error_message is not None else None, work.lease_owner, work.lease_epoch)
    if updated is None:
        raise LeaseLost(work)  # another driver took it over (or finished it) after our lease expired
    await conn.execute(
        "UPDATE devices_for_coordinator SET last_result = $2 WHERE device_id = $1",
        work.device_id, error_code or outcome)
    request = await conn.fetchrow(
        "SELECT status FROM clear_requests WHERE request_id = $1 FOR UPDATE", work.request_id)
    if request is None or request["status"] != "running":
        return True, None
    rows = await conn.fetch(
        "SELECT device_id, outcome, error_code, error_message, backup_id FROM device_clears"
        " WHERE request_id = $1 ORDER BY device_id", work.request_id)
    if any(r["outcome"] is None for r in rows):
        return True, None
    return True, rows


async def mark_finished(conn: asyncpg.Connection, request_id: str, event: dict[str, Any]) -> None:
    await conn.execute(
        "UPDATE clear_requests SET status = 'finished', finished_event = $2::jsonb,"
        " finished_at = now() WHERE request_id = $1", request_id, json.dumps(event))
