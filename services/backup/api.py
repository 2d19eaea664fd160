"""Taking, listing, verifying and restoring backups: the service's ops and the CLI's functions."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import structlog
import trio

from services.backup import sealed, storage, store
from services.backup.snapshot import build_snapshot
from shared.bus.rpc import RpcClient
from shared.bus.topology import COMMANDS, gateway_routing_key
from shared.config import Settings
from shared.db.pool import Database
from shared.errors import ClearCardError, ErrorCode
from shared.messages.backup import BackupTaken, BackupVerified, TakeBackup
from shared.messages.base import utc_now
from shared.messages.device import PeriodCommand, PeriodData

log = structlog.get_logger("clearcard.backup")

READ_PERIOD_TIMEOUT = 120.0  # seconds for the gateway to read a device's whole period


def _failed(message: str) -> ClearCardError:
    return ClearCardError(ErrorCode.BACKUP_FAILED, message)


def _taken(row: store.BackupRow) -> BackupTaken:
    return BackupTaken(backup_id=row.backup_id, checksum=row.checksum, locations=list(row.locations))


async def _read_period(rpc: RpcClient, msg: TakeBackup) -> PeriodData:
    """The device's period from its gateway; device errors (offline, busy...) pass through as they are."""
    command = PeriodCommand(device_id=msg.device_id, period=msg.period, request_id=msg.request_id)
    try:
        with trio.fail_after(READ_PERIOD_TIMEOUT):
            data = await rpc.call(
                COMMANDS, gateway_routing_key(msg.gateway_id, "read_period"), command, PeriodData
            )
    except trio.TooSlowError:
        raise ClearCardError(
            ErrorCode.TIMEOUT, f"gateway {msg.gateway_id} did not return the device's period in time"
        ) from None
    if data.info.device_id != msg.device_id:
        raise _failed(f"the gateway answered for device {data.info.device_id}, not {msg.device_id}")
    return data


async def take_backup(db: Database, settings: Settings, rpc: RpcClient, msg: TakeBackup) -> BackupTaken:
    """Snapshot the device's period to every location, read every copy back, then record it."""
    if not 0 < len(msg.request_id) <= 200:
        raise ClearCardError(ErrorCode.INVALID_REQUEST, "request_id must be 1 to 200 characters")
    existing = await db.run(store.by_request, msg.request_id, msg.device_id)
    if existing is not None:
        return _taken(existing)
    if not settings.backup_dirs:
        raise _failed("no backup locations are configured (CLEARCARD_BACKUP_DIRS)")
    data = await _read_period(rpc, msg)
    taken_at = utc_now()
    snapshot = build_snapshot(
        data,
        period=msg.period,
        request_id=msg.request_id,
        taken_at=taken_at,
        device_record=await db.run(store.device_record, msg.device_id),
    )
    try:
        key_id, key = await trio.to_thread.run_sync(sealed.current_key, settings)
    except (OSError, sealed.CopyDamaged) as exc:
        raise _failed(f"the backup key cannot be used: {exc}") from None
    blob = sealed.seal(snapshot, key_id, key)
    checksum = sealed.checksum(blob)
    file_name = f"{msg.device_id}/{checksum}.ccbk"
    locations = [str(p) for p in settings.backup_dirs]
    try:
        await trio.to_thread.run_sync(storage.write_everywhere, settings.backup_dirs, file_name, blob)
    except storage.LocationFailed as exc:
        raise _failed(f"the backup could not be written to {exc.location}: {exc.reason}") from None
    statuses = await trio.to_thread.run_sync(storage.check_all, settings, locations, file_name, checksum)
    bad = [s for s in statuses if not s.ok]
    if bad:
        raise _failed("; ".join(f"{s.location}: {s.reason}" for s in bad))
    row = store.BackupRow(
        backup_id=f"{msg.device_id}-{msg.period}-{checksum[:12]}",
        device_id=msg.device_id,
        taxpayer_id=data.info.taxpayer_id,
        machine_no=data.info.machine_no,
        family=data.info.family,
        period=msg.period,
        request_id=msg.request_id,
        taken_at=taken_at,
        size=len(blob),
        checksum=checksum,
        key_id=key_id,
        file_name=file_name,
        locations=locations,
    )
    stored = await db.run(store.insert, row)
    log.info("backup taken", backup_id=stored.backup_id, device_id=msg.device_id, period=msg.period)
    return _taken(stored)


async def _row(db: Database, backup_id: str) -> store.BackupRow:
    row = await db.run(store.by_id, backup_id)
    if row is None:
        raise ClearCardError(ErrorCode.INVALID_REQUEST, f"there is no backup {backup_id!r}")
    return row


async def list_backups(db: Database) -> list[dict[str, Any]]:
    """Every backup, oldest first: id, device, period, taken_at, size, locations (and more)."""
    return [row.listing() for row in await db.run(store.all_backups)]


async def check_copies(db: Database, settings: Settings, backup_id: str) -> list[storage.CopyStatus]:
    """Each copy of a backup read back, with the reason for every damaged or missing one."""
    row = await _row(db, backup_id)
    return await trio.to_thread.run_sync(
        storage.check_all, settings, list(row.locations), row.file_name, row.checksum
    )


async def verify_backup(db: Database, settings: Settings, backup_id: str) -> BackupVerified:
    """Read every copy back (checksum and decryption); `damaged` names each bad location."""
    statuses = await check_copies(db, settings, backup_id)
    damaged = [s.location for s in statuses if not s.ok]
    return BackupVerified(backup_id=backup_id, ok=not damaged, damaged=damaged)


def _write_restored(to_dir: Path, snapshot: dict[str, Any]) -> None:
    # a taxpayer's invoices in clear: readable by this account only, never through a planted link
    to_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in ("manifest", "invoices", "monitoring", "summaries", "device_record"):
        text = json.dumps(snapshot.get(name), ensure_ascii=False, indent=2, sort_keys=True)
        fd = os.open(to_dir / f"{name}.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)  # a file that was there before keeps no wider mode
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text + "\n")


async def restore_backup(
    db: Database,
    settings: Settings,
    backup_id: str,
    to_dir: Path,
    *,
    expect_taxpayer: str | None = None,
    expect_machine_no: int | None = None,
    force: bool = False,
) -> Path:
    """Decrypt the backup from any intact copy into `to_dir` (manifest, invoices, monitoring...).

    Restores only onto the same taxpayer and machine number when those are given, unless forced.
    """
    row = await _row(db, backup_id)
    if not force and (
        (expect_taxpayer is not None and expect_taxpayer != row.taxpayer_id)
        or (expect_machine_no is not None and expect_machine_no != row.machine_no)
    ):
        raise ClearCardError(
            ErrorCode.INVALID_REQUEST,
            f"backup {backup_id} belongs to taxpayer {row.taxpayer_id}, machine {row.machine_no}; "
            "a backup is restored only onto the same taxpayer and machine number (use force to override)",
        )
    snapshot, seen = await trio.to_thread.run_sync(
        storage.first_intact, settings, list(row.locations), row.file_name, row.checksum
    )
    if snapshot is None:
        raise _failed("no intact copy: " + "; ".join(f"{s.location}: {s.reason}" for s in seen))
    await trio.to_thread.run_sync(_write_restored, to_dir, snapshot)
    return to_dir
