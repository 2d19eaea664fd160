"""The backups table and the device record a backup includes (asyncio-flavoured, via Database.run)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg


@dataclass(frozen=True)
class BackupRow:
    backup_id: str
    device_id: str
    taxpayer_id: str
    machine_no: int
    family: str
    period: str
    request_id: str
    taken_at: datetime
    size: int
    checksum: str
    key_id: str
    file_name: str
    locations: list[str]

    def listing(self) -> dict[str, Any]:
        """As `clearcard backup list --json` shows it."""
        return {
            "id": self.backup_id,
            "backup_id": self.backup_id,
            "device": self.device_id,
            "device_id": self.device_id,
            "taxpayer_id": self.taxpayer_id,
            "machine_no": self.machine_no,
            "period": self.period,
            "request_id": self.request_id,
            "taken_at": self.taken_at.isoformat(),
            "size": self.size,
            "checksum": self.checksum,
            "locations": list(self.locations),
        }


_COLUMNS = ("backup_id, device_id, taxpayer_id, machine_no, family, period, request_id, taken_at, "
            "size, checksum, key_id, file_name, locations")


def _row(record: asyncpg.Record) -> BackupRow:
    fields = dict(record)
    fields["locations"] = list(fields["locations"])
    return BackupRow(**fields)


async def by_request(conn: asyncpg.Connection, request_id: str, device_id: str) -> BackupRow | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM backups WHERE request_id = $1 AND device_id = $2", request_id, device_id
    )
    return None if row is None else _row(row)


async def by_id(conn: asyncpg.Connection, backup_id: str) -> BackupRow | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM backups WHERE backup_id = $1", backup_id)
    return None if row is None else _row(row)


async def all_backups(conn: asyncpg.Connection) -> list[BackupRow]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM backups ORDER BY taken_at, backup_id")
    return [_row(r) for r in rows]


async def backups_page(conn: asyncpg.Connection, *, after: tuple[datetime, str] | None, limit: int,
                       backup_id: str | None = None, device_id: str | None = None,
                       branches: list[str] | None = None) -> list[BackupRow]:
    """Up to `limit` backups after the cursor `after` (taken_at, backup_id) matching every filter,
    oldest first: a front end reads the list page by page."""
    clauses: list[str] = []
    args: list[Any] = []
    for clause, value in (("backup_id = ${}", backup_id), ("device_id = ${}", device_id),
                          # the devices of those branches: the view the gateway publishes for this service
                          ("device_id IN (SELECT device_id FROM devices_for_backup WHERE branch_id = ANY(${}::text[]))",
                           branches)):
        if value is not None:
            args.append(value)
            clauses.append(clause.format(len(args)))
    if after is not None:
        args.extend(after)
        clauses.append(f"(taken_at, backup_id) > (${len(args) - 1}, ${len(args)})")
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    args.append(limit)
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM backups{where} ORDER BY taken_at, backup_id LIMIT ${len(args)}",
                            *args)
    return [_row(r) for r in rows]


async def insert(conn: asyncpg.Connection, row: BackupRow) -> BackupRow:
    """Record a verified backup; if the same request already recorded one, that one is returned."""
    values = [getattr(row, c.strip()) for c in _COLUMNS.split(",")]
    placeholders = ", ".join(f"${n}" for n in range(1, len(values) + 1))
    inserted = await conn.fetchrow(
        f"INSERT INTO backups ({_COLUMNS}) VALUES ({placeholders}) "
        "ON CONFLICT (request_id, device_id) DO NOTHING RETURNING backup_id",
        *values,
    )
    if inserted is not None:
        return row
    existing = await by_request(conn, row.request_id, row.device_id)
    assert existing is not None
    return existing


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


async def device_record(conn: asyncpg.Connection, device_id: str) -> dict[str, Any] | None:
    """The product's own record of a device (never its PIN)."""
    row = await conn.fetchrow("SELECT * FROM devices_for_backup WHERE device_id = $1", device_id)
    if row is None:
        return None
    record = {k: _plain(v) for k, v in row.items() if k != "pin_cipher"}
    if isinstance(record.get("type_status"), str):
        record["type_status"] = json.loads(record["type_status"])
    if record.get("invoice_types") is not None:
        record["invoice_types"] = list(record["invoice_types"])
    return record


async def delete(conn: asyncpg.Connection, backup_ids: list[str]) -> list[BackupRow]:
    """Remove backups' rows; returns the rows removed (their files are the caller's to remove)."""
    rows = await conn.fetch(f"DELETE FROM backups WHERE backup_id = ANY($1::text[]) RETURNING {_COLUMNS}",
                            backup_ids)
    return [_row(r) for r in rows]


async def written_back(conn: asyncpg.Connection) -> list[tuple[str, str, str | None]]:
    """(device, period, backup relied on) for every device clear that reached its write-back."""
    rows = await conn.fetch(
        "SELECT dc.device_id, cr.period, dc.backup_id FROM device_clears_for_backup dc"
        " JOIN clear_requests_for_backup cr USING (request_id)"
        " WHERE dc.step IN ('written_back', 'verified') OR dc.outcome = 'cleared'"
    )
    return [(r["device_id"], r["period"], r["backup_id"]) for r in rows]


async def reseal(conn: asyncpg.Connection, backup_id: str, *, checksum: str, key_id: str, file_name: str,
                 size: int, locations: list[str]) -> None:
    """Point a backup at its re-encrypted files (key rotation); the id and contents stay the same."""
    await conn.execute(
        "UPDATE backups SET checksum = $2, key_id = $3, file_name = $4, size = $5, locations = $6"
        " WHERE backup_id = $1", backup_id, checksum, key_id, file_name, size, locations)


async def registered_devices(conn: asyncpg.Connection, device_ids: list[str],
                             branch_id: str | None) -> list[tuple[str, str, str | None]]:
    """(device, gateway, open period) of the devices in service a gateway has found, optionally narrowed."""
    rows = await conn.fetch(
        "SELECT device_id, gateway_id, open_period FROM devices_for_backup"
        " WHERE gateway_id IS NOT NULL AND (cardinality($1::text[]) = 0 OR device_id = ANY($1::text[]))"
        " AND ($2::text IS NULL OR branch_id = $2) ORDER BY device_id",
        device_ids, branch_id)
    return [(r["device_id"], r["gateway_id"], r["open_period"]) for r in rows]
