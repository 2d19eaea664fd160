"""Leases on device clears, with fencing numbers: one coordinator drives a device at a time.

A coordinator claims an unleased or expired device clear and takes the next fencing number
(`lease_epoch`); its heartbeat extends the leases it holds. Every write it makes for that
device (repository.py: `save_step`, `begin_writeback`, `finish_device`) names its owner id and
that number, so after a database pause longer than the lease, when another replica has claimed
the device meanwhile, the first one's writes match nothing: it gets `LeaseLost`, stops driving
the device and writes nothing more for it. The heartbeat reports such losses too, so the
runner stops even before its next write.
"""

from __future__ import annotations

import asyncpg

from services.coordinator.repository import CLAIM_LOCK, LEASE_SECONDS, WORK_COLUMNS, LeaseLost, Work, work_of

__all__ = ["LeaseLost", "claim_work", "renew_leases"]

Key = tuple[str, str]  # (request id, device id)


async def claim_work(conn: asyncpg.Connection, owner: str, limit: int,
                     lease: float = LEASE_SECONDS) -> list[Work]:
    """Take unleased or expired device clears, at most one per device across all requests.

    A clear whose lease `owner` itself let expire is not taken again here: its driver is still
    running (its heartbeat could not reach the database) and a fresh fencing number would shut
    it out; the heartbeat renews it once the database answers, unless another replica took it.
    """
    await conn.execute("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK)
    rows = await conn.fetch(
        f"""
        WITH candidates AS (
            SELECT DISTINCT ON (d.device_id) d.request_id, d.device_id
            FROM device_clears d
            WHERE d.outcome IS NULL AND (d.lease_until IS NULL OR d.lease_until < now())
              AND d.lease_owner IS DISTINCT FROM $1
              AND NOT EXISTS (
                SELECT 1 FROM device_clears o
                WHERE o.device_id = d.device_id AND o.outcome IS NULL
                  AND o.lease_until >= now() AND o.request_id <> d.request_id)
            ORDER BY d.device_id, d.updated_at
            LIMIT $2
        ), claimed AS (
            UPDATE device_clears d
            SET lease_owner = $1, lease_until = now() + make_interval(secs => $3),
                lease_epoch = d.lease_epoch + 1
            FROM candidates c
            WHERE d.request_id = c.request_id AND d.device_id = c.device_id
            RETURNING d.*
        )
        SELECT {WORK_COLUMNS} FROM claimed d JOIN clear_requests r USING (request_id)
        LEFT JOIN devices_for_coordinator v ON v.device_id = d.device_id
        """, owner, limit, float(lease))
    return [work_of(r) for r in rows]


async def renew_leases(conn: asyncpg.Connection, owner: str, held: list[tuple[str, str, int]],
                       lease: float = LEASE_SECONDS) -> set[Key]:
    """Extend the leases this process holds (request, device, fencing number); returns the ones lost.

    A lease is renewed while it is still ours, even past its expiry when no one claimed it
    meanwhile (a database outage is only a delay). Rows another transaction holds are skipped,
    not waited for: waiting here (many rows, in no particular order) closed deadlock cycles with
    `begin_writeback` (request row shared, then a device row) and `finish_device` (a device row,
    then the request row). A skipped row is being saved or finished right now, which extends or
    ends its lease anyway, and the next heartbeat (lease/4 later) renews it otherwise.
    """
    if not held:
        return set()
    request_ids, device_ids, epochs = [h[0] for h in held], [h[1] for h in held], [h[2] for h in held]
    await conn.execute(
        "UPDATE device_clears d SET lease_until = now() + make_interval(secs => $5)"
        " FROM (SELECT c.request_id, c.device_id FROM device_clears c"
        "       JOIN unnest($2::text[], $3::text[], $4::bigint[]) AS k(request_id, device_id, epoch)"
        "         ON c.request_id = k.request_id AND c.device_id = k.device_id"
        "       WHERE c.lease_owner = $1 AND c.lease_epoch = k.epoch AND c.outcome IS NULL"
        "       FOR UPDATE OF c SKIP LOCKED) AS free"
        " WHERE d.request_id = free.request_id AND d.device_id = free.device_id",
        owner, request_ids, device_ids, epochs, float(lease))
    lost = await conn.fetch(
        "SELECT k.request_id, k.device_id"
        " FROM unnest($2::text[], $3::text[], $4::bigint[]) AS k(request_id, device_id, epoch)"
        " LEFT JOIN device_clears c ON c.request_id = k.request_id AND c.device_id = k.device_id"
        " WHERE c.request_id IS NULL"
        "    OR (c.outcome IS NULL AND (c.lease_owner IS DISTINCT FROM $1 OR c.lease_epoch <> k.epoch))",
        owner, request_ids, device_ids, epochs)
    return {(r["request_id"], r["device_id"]) for r in lost}
