"""What the gateway records of the hardware it sees (asyncio-flavoured: run through `Database.run`).

Its own table is `device_sightings` (every device found on its buses, enrolled or not, and the
PIN revision a device refused); it fills in the state columns of the `devices` rows the
registry keeps for enrolled devices in service (docs/device-registry.md). Unenrolled hardware
has no `devices` row, so updates of its state change nothing there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date

import asyncpg

from device_registry import store as registry_store
from shared.messages.device import DeviceInfo


@dataclass(frozen=True)
class PinState:
    """What precheck needs: is the device in service, its PIN on record, the revision it refused."""

    in_service: bool
    cipher: bytes | None
    revision: int
    refused_revision: int | None

    @property
    def already_refused(self) -> bool:
        """The device refused exactly this PIN on record (a PIN recorded since is tried again)."""
        return self.cipher is not None and self.refused_revision == self.revision


async def record_sightings(conn: asyncpg.Connection, gateway_id: str, seen: dict[str, str],
                           online: bool) -> None:
    """The hardware this gateway finds on its buses (serial -> family), enrolled or not.

    An enrolled device's `devices` row learns which gateway it is connected to.
    """
    if not seen:
        return
    ids = sorted(seen)
    await conn.execute(
        """
        INSERT INTO device_sightings AS s (device_id, gateway_id, family, online, last_seen)
        SELECT id, $2, family, $4, CASE WHEN $4 THEN now() END
        FROM unnest($1::text[], $3::text[]) AS t (id, family)
        ON CONFLICT (device_id) DO UPDATE SET gateway_id = EXCLUDED.gateway_id, family = EXCLUDED.family,
            online = EXCLUDED.online, last_seen = coalesce(EXCLUDED.last_seen, s.last_seen)
        """, ids, gateway_id, [seen[i] for i in ids], online)
    await conn.execute(
        "UPDATE devices SET gateway_id = $2, updated_at = now()"
        " WHERE device_id = ANY($1::text[]) AND gateway_id IS DISTINCT FROM $2", ids, gateway_id)


async def record_info(conn: asyncpg.Connection, info: DeviceInfo) -> None:
    """Store what the device just said about itself; it is online."""
    await _seen_online(conn, [info.device_id])
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


async def _seen_online(conn: asyncpg.Connection, device_ids: list[str]) -> None:
    await conn.execute("UPDATE device_sightings SET online = true, last_seen = now()"
                       " WHERE device_id = ANY($1::text[])", device_ids)


async def record_seen(conn: asyncpg.Connection, device_id: str) -> None:
    """The device answered a command that does not change what the table shows."""
    await _seen_online(conn, [device_id])
    await conn.execute(
        "UPDATE devices SET online = true, last_seen = now(), updated_at = now() WHERE device_id = $1",
        device_id,
    )


async def record_online(conn: asyncpg.Connection, device_ids: list[str], online: bool) -> None:
    """Mark devices connected or disconnected."""
    await conn.execute(
        "UPDATE device_sightings SET online = $2 WHERE device_id = ANY($1::text[]) AND online IS DISTINCT FROM $2",
        device_ids, online)
    await conn.execute(
        "UPDATE devices SET online = $2, updated_at = now() WHERE device_id = ANY($1::text[])"
        " AND online IS DISTINCT FROM $2",
        device_ids, online,
    )


async def pin_state(conn: asyncpg.Connection, device_id: str) -> PinState:
    """The registry's PIN on record for the device and the revision the device last refused."""
    record = await registry_store.pin_on_record(conn, device_id)
    in_service = record is not None or bool(await registry_store.in_service(conn, [device_id]))
    refused = await conn.fetchval(
        "SELECT pin_refused_revision FROM device_sightings WHERE device_id = $1", device_id)
    cipher, revision = record if record is not None else (None, 0)
    return PinState(in_service, cipher, revision, refused)


async def record_refused_pin(conn: asyncpg.Connection, device_id: str, revision: int | None) -> None:
    """Remember (or forget, with None) that the device refused the PIN of this revision."""
    await conn.execute(
        "UPDATE device_sightings SET pin_refused_revision = $2 WHERE device_id = $1", device_id, revision)
