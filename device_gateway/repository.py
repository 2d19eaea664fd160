"""The gateway's rows in the `devices` table (asyncio-flavoured: run through `Database.run`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date

import asyncpg

from shared.messages.device import DeviceInfo


@dataclass(frozen=True)
class DeviceRow:
    """A device's registry entry as its gateway knows it."""

    device_id: str
    family: str
    taxpayer_id: str
    branch_id: str
    machine_no: int
    invoice_types: list[str]
    pin_cipher: bytes


async def register_devices(conn: asyncpg.Connection, gateway_id: str, rows: list[DeviceRow]) -> None:
    """Insert or refresh each device's identity; a PIN on record already stored is kept."""
    await conn.executemany(
        """
        INSERT INTO devices (device_id, family, taxpayer_id, branch_id, machine_no, gateway_id,
                             invoice_types, pin_cipher, online, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, false, now())
        ON CONFLICT (device_id) DO UPDATE SET
            family = EXCLUDED.family, taxpayer_id = EXCLUDED.taxpayer_id,
            branch_id = EXCLUDED.branch_id, machine_no = EXCLUDED.machine_no,
            gateway_id = EXCLUDED.gateway_id, invoice_types = EXCLUDED.invoice_types,
            pin_cipher = COALESCE(devices.pin_cipher, EXCLUDED.pin_cipher),
            updated_at = now()
        """,
        [(r.device_id, r.family, r.taxpayer_id, r.branch_id, r.machine_no, gateway_id,
          r.invoice_types, r.pin_cipher) for r in rows],
    )


async def record_info(conn: asyncpg.Connection, info: DeviceInfo) -> None:
    """Store what the device just said about itself; it is online."""
    await conn.execute(
        """
        UPDATE devices SET type_status = $2::jsonb, open_period = $3, lock_date = $4,
               pin_tries_left = $5, offline_pending = $6, invoice_types = $7,
               latest_report_date = coalesce($8, latest_report_date),
               online = true, last_seen = now(), updated_at = now()
        WHERE device_id = $1
        """,
        info.device_id, json.dumps(info.types), info.open_period,
        date.fromisoformat(info.monitoring.lock_date), info.pin_tries_left, info.offline_pending,
        sorted(info.types),
        date.fromisoformat(info.monitoring.latest_report_date) if info.monitoring.latest_report_date else None,
    )


async def record_seen(conn: asyncpg.Connection, device_id: str) -> None:
    """The device answered a command that does not change what the table shows."""
    await conn.execute(
        "UPDATE devices SET online = true, last_seen = now(), updated_at = now() WHERE device_id = $1",
        device_id,
    )


async def record_online(conn: asyncpg.Connection, device_ids: list[str], online: bool) -> None:
    """Mark devices connected or disconnected."""
    await conn.execute(
        "UPDATE devices SET online = $2, updated_at = now() WHERE device_id = ANY($1::text[])"
        " AND online IS DISTINCT FROM $2",
        device_ids, online,
    )


async def pin_record(conn: asyncpg.Connection, device_id: str) -> tuple[bytes | None, str | None]:
    """(encrypted PIN on record, fingerprint of a PIN the device refused)."""
    row = await conn.fetchrow(
        "SELECT pin_cipher, pin_failed_hash FROM devices WHERE device_id = $1", device_id
    )
    if row is None:
        return None, None
    return (bytes(row["pin_cipher"]) if row["pin_cipher"] is not None else None), row["pin_failed_hash"]


async def record_failed_pin(conn: asyncpg.Connection, device_id: str, fingerprint: str | None) -> None:
    """Remember (or forget, with None) the PIN the device refused."""
    await conn.execute(
        "UPDATE devices SET pin_failed_hash = $2, updated_at = now() WHERE device_id = $1",
        device_id, fingerprint,
    )
