"""The registry's tables (asyncio-flavoured: run through `Database.run`, one transaction each).

`device_enrolments` is the registry's own; a `devices` row exists exactly for each enrolled
device in service (the registry creates and deletes it; gateways fill in what the device says).
`device_sightings` is the gateways' record of the hardware they see, read here for what it
publishes: where an enrolled device is connected, and hardware nobody enrolled yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from device_registry.enrolment import ERRORS_SHOWN, CsvRow, Enrolment, ImportRefused, RowError

STAGE_BATCH = 1000  # rows copied into the staging table at a time


@dataclass(frozen=True)
class ImportCounts:
    """What an import changed: new devices, corrected ones, retired ones back in service."""

    enrolled: int
    updated: int
    reinstated: int
    unchanged: int


@dataclass(frozen=True)
class Change:
    """One device an import changed, for the audit log."""

    device_id: str
    branch_id: str
    kind: str  # enrolled | updated | reinstated


@dataclass(frozen=True)
class Standing:
    """Where the product stands with one device id."""

    enrolled: bool
    retired_at: datetime | None
    branch_id: str | None
    gateway_id: str | None  # the gateway that last saw the hardware, if any
    family: str | None


# --- import ------------------------------------------------------------------------------------

async def _stage(conn: asyncpg.Connection, rows: Iterable[CsvRow | RowError],
                 scope: set[str] | None) -> tuple[list[RowError], int]:
    """Copy the good rows into a temporary table; the bad ones come back (up to ERRORS_SHOWN)."""
    await conn.execute(
        "CREATE TEMPORARY TABLE enrolment_import (line integer NOT NULL, device_id text NOT NULL,"
        " family text NOT NULL, taxpayer_id text NOT NULL, branch_id text NOT NULL,"
        " machine_no integer NOT NULL) ON COMMIT DROP")
    errors: list[RowError] = []
    total = 0
    batch: list[tuple[int, str, str, str, str, int]] = []

    def bad(error: RowError) -> None:
        nonlocal total
        total += 1
        if len(errors) < ERRORS_SHOWN:
            errors.append(error)

    for row in rows:
        if isinstance(row, RowError):
            bad(row)
            continue
        e = row.enrolment
        if scope is not None and e.branch_id not in scope:
            bad(RowError(row.line, f"branch {e.branch_id} is not one of the branches you administer"))
            continue
        batch.append((row.line, e.device_id, e.family, e.taxpayer_id, e.branch_id, e.machine_no))
        if len(batch) >= STAGE_BATCH:
            await conn.copy_records_to_table("enrolment_import", records=batch)
            batch.clear()
    if batch:
        await conn.copy_records_to_table("enrolment_import", records=batch)
    for r in await conn.fetch(
            "SELECT device_id, array_agg(line ORDER BY line) AS lines FROM enrolment_import"
            " GROUP BY device_id HAVING count(*) > 1 ORDER BY min(line)"):
        for line in r["lines"][1:]:
            bad(RowError(line, f"device {r['device_id']} appears twice (first at line {r['lines'][0]})"))
    errors.sort(key=lambda e: e.line)
    return errors, total


async def import_enrolments(conn: asyncpg.Connection, rows: Iterable[CsvRow | RowError], *, actor: str,
                            source: str, scope: set[str] | None = None) -> tuple[ImportCounts, list[Change]]:
    """Enrol or update every row, or none: ImportRefused names each bad row (the transaction rolls back).

    `scope` limits the branches rows may name (a branch-scoped administrator); None = any.
    """
    errors, total = await _stage(conn, rows, scope)
    if total:
        raise ImportRefused(errors, total)
    counts = await conn.fetchrow(
        """
        SELECT count(*) FILTER (WHERE e.device_id IS NULL) AS enrolled,
               count(*) FILTER (WHERE e.retired_at IS NOT NULL) AS reinstated,
               count(*) FILTER (WHERE e.device_id IS NOT NULL AND e.retired_at IS NULL AND (e.family,
                   e.taxpayer_id, e.branch_id, e.machine_no)
                   IS DISTINCT FROM (i.family, i.taxpayer_id, i.branch_id, i.machine_no)) AS updated,
               count(*) FILTER (WHERE e.device_id IS NOT NULL AND e.retired_at IS NULL AND (e.family,
                   e.taxpayer_id, e.branch_id, e.machine_no)
                   IS NOT DISTINCT FROM (i.family, i.taxpayer_id, i.branch_id, i.machine_no)) AS unchanged
        FROM enrolment_import i LEFT JOIN device_enrolments e USING (device_id)
        """)
    reinstated = {r["device_id"] for r in await conn.fetch(
        "SELECT device_id FROM enrolment_import JOIN device_enrolments e USING (device_id)"
        " WHERE e.retired_at IS NOT NULL")} if counts["reinstated"] else set()
    changed = await conn.fetch(
        """
        INSERT INTO device_enrolments AS e (device_id, family, taxpayer_id, branch_id, machine_no,
                                            source, enrolled_by)
        SELECT device_id, family, taxpayer_id, branch_id, machine_no, $1, $2 FROM enrolment_import
        ON CONFLICT (device_id) DO UPDATE SET
            family = EXCLUDED.family, taxpayer_id = EXCLUDED.taxpayer_id, branch_id = EXCLUDED.branch_id,
            machine_no = EXCLUDED.machine_no, updated_at = now(), retired_at = NULL, retired_by = NULL
        WHERE e.retired_at IS NOT NULL OR (e.family, e.taxpayer_id, e.branch_id, e.machine_no)
              IS DISTINCT FROM (EXCLUDED.family, EXCLUDED.taxpayer_id, EXCLUDED.branch_id, EXCLUDED.machine_no)
        RETURNING e.device_id, e.branch_id, (xmax = 0) AS inserted
        """, source, actor)
    await _in_service(conn, "SELECT device_id FROM enrolment_import")
    result = ImportCounts(counts["enrolled"], counts["updated"], counts["reinstated"], counts["unchanged"])
    return result, [Change(r["device_id"], r["branch_id"],
                           "enrolled" if r["inserted"] else
                           "reinstated" if r["device_id"] in reinstated else "updated") for r in changed]


async def _in_service(conn: asyncpg.Connection, ids_query: str, *args: object) -> None:
    """Create or refresh the `devices` rows of the enrolments `ids_query` selects (not retired)."""
    await conn.execute(
        f"""
        INSERT INTO devices AS d (device_id, family, taxpayer_id, branch_id, machine_no, gateway_id,
                                  online, last_seen)
        SELECT e.device_id, e.family, e.taxpayer_id, e.branch_id, e.machine_no, s.gateway_id,
               coalesce(s.online, false), s.last_seen
        FROM device_enrolments e LEFT JOIN device_sightings s USING (device_id)
        WHERE e.retired_at IS NULL AND e.device_id IN ({ids_query})
        ON CONFLICT (device_id) DO UPDATE SET
            family = EXCLUDED.family, taxpayer_id = EXCLUDED.taxpayer_id, branch_id = EXCLUDED.branch_id,
            machine_no = EXCLUDED.machine_no, updated_at = now()
        WHERE (d.family, d.taxpayer_id, d.branch_id, d.machine_no)
              IS DISTINCT FROM (EXCLUDED.family, EXCLUDED.taxpayer_id, EXCLUDED.branch_id, EXCLUDED.machine_no)
        """, *args)


# --- fleet file --------------------------------------------------------------------------------

async def enrol_seeded(conn: asyncpg.Connection, rows: list[tuple[Enrolment, bytes]]) -> list[str]:
    """Enrol a fleet file's devices the registry never knew (with their PIN on record).

    A device the registry already knows, retired or not, is left as it is: the fleet file seeds
    an installation, it does not override what operators did since. Returns the ids enrolled.
    """
    if not rows:
        return []
    ids = [e.device_id for e, _ in rows]
    known = {r["device_id"] for r in await conn.fetch(
        "SELECT device_id FROM device_enrolments WHERE device_id = ANY($1::text[])", ids)}
    new = [(e, cipher) for e, cipher in rows if e.device_id not in known]
    await conn.executemany(
        "INSERT INTO device_enrolments (device_id, family, taxpayer_id, branch_id, machine_no, pin_cipher,"
        " pin_revision, source, enrolled_by) VALUES ($1, $2, $3, $4, $5, $6, 1, 'fleet', 'fleet file')"
        " ON CONFLICT (device_id) DO NOTHING",
        [(e.device_id, e.family, e.taxpayer_id, e.branch_id, e.machine_no, cipher) for e, cipher in new])
    enrolled = [e.device_id for e, _ in new]
    await _in_service(conn, "SELECT unnest($1::text[])", enrolled)
    return enrolled


# --- one device --------------------------------------------------------------------------------

async def standing(conn: asyncpg.Connection, device_id: str) -> Standing:
    """What the product knows of `device_id`: enrolment, retirement and the hardware seen."""
    row = await conn.fetchrow(
        "SELECT e.device_id IS NOT NULL AS enrolled, e.retired_at, e.branch_id, s.gateway_id,"
        " coalesce(e.family, s.family) AS family"
        " FROM (SELECT $1::text AS device_id) q"
        " LEFT JOIN device_enrolments e USING (device_id) LEFT JOIN device_sightings s USING (device_id)",
        device_id)
    return Standing(row["enrolled"], row["retired_at"], row["branch_id"], row["gateway_id"], row["family"])


async def retire(conn: asyncpg.Connection, device_id: str, actor: str) -> bool:
    """Take an enrolled device out of service; False when it already was. Its `devices` row goes."""
    row = await conn.fetchrow(
        "UPDATE device_enrolments SET retired_at = now(), retired_by = $2, updated_at = now()"
        " WHERE device_id = $1 AND retired_at IS NULL RETURNING 1", device_id, actor)
    await conn.execute("DELETE FROM devices WHERE device_id = $1", device_id)
    return row is not None


async def unfinished_clear(conn: asyncpg.Connection, device_id: str) -> str | None:
    """The request still clearing this device, if any (the coordinator's published progress)."""
    value: str | None = await conn.fetchval(
        "SELECT request_id FROM device_clears_for_gateway WHERE device_id = $1 AND outcome IS NULL LIMIT 1", device_id)
    return value


async def set_pin(conn: asyncpg.Connection, device_id: str, cipher: bytes) -> int | None:
    """Record a device's PIN (encrypted); the new revision, or None if it is not in service."""
    revision: int | None = await conn.fetchval(
        "UPDATE device_enrolments SET pin_cipher = $2, pin_revision = pin_revision + 1, updated_at = now()"
        " WHERE device_id = $1 AND retired_at IS NULL RETURNING pin_revision", device_id, cipher)
    return revision


async def pin_on_record(conn: asyncpg.Connection, device_id: str) -> tuple[bytes, int] | None:
    """(encrypted PIN, its revision) of a device in service, or None when none is recorded."""
    row = await conn.fetchrow(
        "SELECT pin_cipher, pin_revision FROM device_enrolments"
        " WHERE device_id = $1 AND retired_at IS NULL AND pin_cipher IS NOT NULL", device_id)
    return None if row is None else (bytes(row["pin_cipher"]), row["pin_revision"])


async def in_service(conn: asyncpg.Connection, device_ids: list[str]) -> set[str]:
    """Those of `device_ids` that are enrolled and not retired."""
    rows = await conn.fetch("SELECT device_id FROM device_enrolments"
                            " WHERE device_id = ANY($1::text[]) AND retired_at IS NULL", device_ids)
    return {r["device_id"] for r in rows}
