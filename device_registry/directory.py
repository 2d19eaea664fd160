"""Reading the registry page by page: `device list` and `device export` (keyset pages by device id).

A whole fleet never sits in memory: callers ask for the page after the last id they got.
Hardware a gateway sees that nobody enrolled is listed with `"enrolled": false`; it belongs to
no branch, so a listing narrowed to branches leaves it out.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from device_registry.enrolment import Enrolment

PAGE = 1000

_LIST = """
(SELECT e.device_id, e.family, e.taxpayer_id, e.branch_id, e.machine_no, true AS enrolled,
        e.retired_at, e.enrolled_at, e.pin_cipher IS NOT NULL AS pin_on_record,
        s.gateway_id, s.family AS hardware_family, s.online, s.last_seen
 FROM device_enrolments e LEFT JOIN device_sightings s USING (device_id)
 WHERE e.device_id > $1 AND ($2::text[] IS NULL OR e.branch_id = ANY($2::text[]))
 ORDER BY e.device_id LIMIT $3)
UNION ALL
(SELECT s.device_id, s.family, NULL, NULL, NULL, false, NULL, NULL, false,
        s.gateway_id, s.family, s.online, s.last_seen
 FROM device_sightings s
 WHERE s.device_id > $1 AND $2::text[] IS NULL
   AND NOT EXISTS (SELECT 1 FROM device_enrolments e WHERE e.device_id = s.device_id)
 ORDER BY s.device_id LIMIT $3)
ORDER BY device_id LIMIT $3
"""


def _iso(value: Any) -> Any:
    return None if value is None else value.isoformat()


def entry(row: asyncpg.Record) -> dict[str, Any]:
    """One device of `device list --json` (never its PIN: only whether one is on record)."""
    shown: dict[str, Any] = {
        "device_id": row["device_id"], "family": row["family"], "taxpayer_id": row["taxpayer_id"],
        "branch_id": row["branch_id"], "branch": row["branch_id"],  # `branch`: the import file's name
        "machine_no": row["machine_no"],
        "enrolled": row["enrolled"], "retired": row["retired_at"] is not None,
        "retired_at": _iso(row["retired_at"]), "enrolled_at": _iso(row["enrolled_at"]),
        "pin_on_record": row["pin_on_record"],
        # what the hardware showed its gateway (the serial string is the device number)
        "serial": row["device_id"] if row["gateway_id"] is not None else None,
        "gateway_id": row["gateway_id"], "online": bool(row["online"]),
        "last_seen": _iso(row["last_seen"]),
    }
    if row["hardware_family"] is not None and row["hardware_family"] != row["family"]:
        shown["hardware_family"] = row["hardware_family"]  # enrolled as one family, seen as another
    return shown


async def list_page(conn: asyncpg.Connection, after: str = "", branches: list[str] | None = None,
                    limit: int = PAGE) -> list[dict[str, Any]]:
    """Up to `limit` devices after id `after`: enrolled (retired ones too) and unenrolled hardware."""
    return [entry(r) for r in await conn.fetch(_LIST, after, branches, limit)]


async def export_page(conn: asyncpg.Connection, after: str = "", branches: list[str] | None = None,
                      limit: int = PAGE) -> list[Enrolment]:
    """Up to `limit` enrolled devices in service after id `after`, as an import file holds them."""
    rows = await conn.fetch(
        "SELECT device_id, family, taxpayer_id, branch_id, machine_no FROM device_enrolments"
        " WHERE device_id > $1 AND retired_at IS NULL AND ($2::text[] IS NULL OR branch_id = ANY($2::text[]))"
        " ORDER BY device_id LIMIT $3", after, branches, limit)
    return [Enrolment(r["device_id"], r["family"], r["taxpayer_id"], r["branch_id"], r["machine_no"])
            for r in rows]
