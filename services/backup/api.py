"""Taking, listing, verifying and restoring backups: the service's ops and the CLI's functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog
import trio

from services.backup import chunked, pages, sealed, storage, store
from services.backup.restore import restore_first_intact
from services.backup.snapshot import INVOICES_PER_CHUNK, end_document, head_document, invoices_document
from shared.bus.rpc import RpcClient
from shared.config import Settings
from shared.db.pool import Database
from shared.errors import ClearCardError, ErrorCode
from shared.messages.backup import BackupTaken, BackupVerified, TakeBackup
from shared.messages.base import utc_now
from shared.messages.device import PeriodHeader

log = structlog.get_logger("clearcard.backup")


def _failed(message: str) -> ClearCardError:
    return ClearCardError(ErrorCode.BACKUP_FAILED, message)


def _taken(row: store.BackupRow) -> BackupTaken:
    return BackupTaken(backup_id=row.backup_id, checksum=row.checksum, locations=list(row.locations))


async def _stream_period(rpc: RpcClient, msg: TakeBackup, copies: storage.NewCopies, sealer: chunked.Sealer,
                         head: dict[str, Any], header: PeriodHeader) -> int:
    """Write the period into `copies` chunk by chunk as its pages arrive; returns the invoice count."""
    await trio.to_thread.run_sync(copies.write, sealer.header + sealer.chunk(head))
    batch: list[dict[str, Any]] = []
    count = 0
    async for invoices in pages.invoice_pages(rpc, msg, header):
        batch += [i.model_dump(mode="json") for i in invoices]
        if len(batch) >= INVOICES_PER_CHUNK:
            count += len(batch)
            await trio.to_thread.run_sync(copies.write, sealer.chunk(invoices_document(batch)))
            batch = []
    if batch:
        count += len(batch)
        await trio.to_thread.run_sync(copies.write, sealer.chunk(invoices_document(batch)))
    await trio.to_thread.run_sync(copies.write, sealer.chunk(end_document(count), final=True))
    return count


async def take_backup(db: Database, settings: Settings, rpc: RpcClient, msg: TakeBackup) -> BackupTaken:
    """Stream the device's period into every location, read every copy back, then record it."""
    if not 0 < len(msg.request_id) <= 200:
        raise ClearCardError(ErrorCode.INVALID_REQUEST, "request_id must be 1 to 200 characters")
    existing = await db.run(store.by_request, msg.request_id, msg.device_id)
    if existing is not None:
        return _taken(existing)
    if not settings.backup_dirs:
        raise _failed("no backup locations are configured (CLEARCARD_BACKUP_DIRS)")
    header = await pages.read_header(rpc, msg)
    taken_at = utc_now()
    head = head_document(header, period=msg.period, request_id=msg.request_id, taken_at=taken_at,
                         device_record=await db.run(store.device_record, msg.device_id))
    try:
        key_id, key = await trio.to_thread.run_sync(sealed.current_key, settings)
    except (OSError, sealed.CopyDamaged) as exc:
        raise _failed(f"the backup key cannot be used: {exc}") from None
    try:
        copies = await trio.to_thread.run_sync(storage.NewCopies, settings.backup_dirs, msg.device_id)
        try:
            await _stream_period(rpc, msg, copies, chunked.Sealer(key_id, key), head, header)
            file_name = f"{msg.device_id}/{copies.checksum}.ccbk"
            await trio.to_thread.run_sync(copies.commit, file_name)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(copies.discard)
    except storage.LocationFailed as exc:
        raise _failed(f"the backup could not be written to {exc.location}: {exc.reason}") from None
    locations = [str(p) for p in settings.backup_dirs]
    statuses = await trio.to_thread.run_sync(storage.check_all, settings, locations, file_name, copies.checksum)
    bad = [s for s in statuses if not s.ok]
    if bad:
        raise _failed("; ".join(f"{s.location}: {s.reason}" for s in bad))
    row = store.BackupRow(
        backup_id=f"{msg.device_id}-{msg.period}-{copies.checksum[:12]}",
        device_id=msg.device_id,
        taxpayer_id=header.info.taxpayer_id,
        machine_no=header.info.machine_no,
        family=header.info.family,
        period=msg.period,
        request_id=msg.request_id,
        taken_at=taken_at,
        size=copies.size,
        checksum=copies.checksum,
        key_id=key_id,
        file_name=file_name,
        locations=locations,
    )
    stored = await db.run(store.insert, row)
    if stored.backup_id != row.backup_id:  # the same request's other take finished first: keep one
        await trio.to_thread.run_sync(copies.remove, file_name)
    log.info("backup taken", backup_id=stored.backup_id, device_id=msg.device_id, period=msg.period,
             invoices=head["manifest"]["invoice_count"], size=copies.size)
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
    """Decrypt the backup from any intact copy into `to_dir` as a stream (manifest, invoices, monitoring...).

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
    seen = await trio.to_thread.run_sync(
        restore_first_intact, settings, list(row.locations), row.file_name, row.checksum, to_dir
    )
    if not seen or not seen[-1].ok:
        raise _failed("no intact copy: " + "; ".join(f"{s.location}: {s.reason}" for s in seen))
    return to_dir
