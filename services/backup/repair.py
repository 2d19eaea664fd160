"""Repairing a backup's damaged or missing copies from an intact one, and re-encrypting under a new key."""

from __future__ import annotations

from pathlib import Path

import structlog
import trio

from services.backup import chunked, sealed, storage, store
from services.backup.snapshot import Head, end_document, invoices_document
from shared.config import Settings
from shared.db.pool import Database
from shared.errors import ClearCardError, ErrorCode

log = structlog.get_logger("clearcard.backup")


async def _row(db: Database, backup_id: str) -> store.BackupRow:
    row = await db.run(store.by_id, backup_id)
    if row is None:
        raise ClearCardError(ErrorCode.INVALID_REQUEST, f"there is no backup {backup_id!r}")
    return row


def _repair(settings: Settings, row: store.BackupRow) -> list[str]:
    statuses = storage.check_all(settings, list(row.locations), row.file_name, row.checksum)
    intact = [s.location for s in statuses if s.ok]
    damaged = [s for s in statuses if not s.ok]
    if not damaged:
        return []
    if not intact:
        raise ClearCardError(ErrorCode.BACKUP_FAILED, f"backup {row.backup_id} has no intact copy to repair from: "
                             + "; ".join(f"{s.location}: {s.reason}" for s in damaged))
    good = Path(intact[0]) / row.file_name
    repaired, failed = [], []
    for status in damaged:
        try:
            storage.copy_atomically(good, Path(status.location), row.file_name)
        except storage.LocationFailed as exc:
            failed.append(f"{exc.location}: {exc.reason}")
            continue
        # the new copy is read back whole, so a source that changed since it was checked shows here
        after = storage.check_copy(settings, status.location, row.file_name, row.checksum)
        if after.ok:
            repaired.append(status.location)
        else:
            failed.append(f"{status.location}: {after.reason}")
    if failed:
        raise ClearCardError(ErrorCode.BACKUP_FAILED, f"backup {row.backup_id}: repaired {repaired or 'nothing'}, "
                             f"still damaged: {'; '.join(failed)}")
    return repaired


async def repair_backup(db: Database, settings: Settings, backup_id: str) -> list[str]:
    """Rewrite every damaged or missing copy from an intact one; returns the repaired locations."""
    row = await _row(db, backup_id)
    repaired = await trio.to_thread.run_sync(_repair, settings, row)
    if repaired:
        log.info("backup repaired", backup_id=backup_id, locations=repaired)
    return repaired


def _reseal_from(settings: Settings, row: store.BackupRow, source: Path, key_id: str) -> tuple[str, str, int]:
    """Stream one intact copy, re-encrypted under `key_id`, into every location; (checksum, file, size)."""
    sealer = chunked.Sealer(key_id, sealed.load_key(settings, key_id))
    copies = storage.NewCopies(tuple(Path(p) for p in row.locations), row.device_id)
    try:
        with storage.reading(settings, source) as (reader, parts):
            count = 0
            for part in parts:
                if isinstance(part, Head):
                    head = {"format": 2, "manifest": part.manifest, "monitoring": part.monitoring,
                            "summaries": part.summaries, "device_record": part.device_record}
                    copies.write(sealer.header + sealer.chunk(head))
                else:
                    count += len(part)
                    copies.write(sealer.chunk(invoices_document(part)))
            copies.write(sealer.chunk(end_document(count), final=True))
            if reader.checksum() != row.checksum:
                raise sealed.CopyDamaged("changed while it was re-encrypted")
        file_name = f"{row.device_id}/{copies.checksum}.ccbk"
        copies.commit(file_name)
    finally:
        copies.discard()
    return copies.checksum, file_name, copies.size


def _reseal(settings: Settings, row: store.BackupRow, key_id: str) -> tuple[str, str, int] | None:
    """Re-encrypt one backup under `key_id` into every location; None if it already uses that key."""
    if row.key_id == key_id:
        return None
    statuses = storage.check_all(settings, list(row.locations), row.file_name, row.checksum)
    intact = [s.location for s in statuses if s.ok]
    if not intact:
        raise ClearCardError(ErrorCode.BACKUP_FAILED, f"backup {row.backup_id} has no intact copy: "
                             + "; ".join(f"{s.location}: {s.reason}" for s in statuses))
    try:
        checksum, file_name, size = _reseal_from(settings, row, Path(intact[0]) / row.file_name, key_id)
    except storage.LocationFailed as exc:
        raise ClearCardError(ErrorCode.BACKUP_FAILED, f"{exc.location}: {exc.reason}") from None
    except sealed.CopyDamaged as exc:
        raise ClearCardError(ErrorCode.BACKUP_FAILED,
                             f"backup {row.backup_id}: the copy in {intact[0]} {exc}") from None
    bad = [s for s in storage.check_all(settings, list(row.locations), file_name, checksum) if not s.ok]
    if bad:
        raise ClearCardError(ErrorCode.BACKUP_FAILED, "; ".join(f"{s.location}: {s.reason}" for s in bad))
    return checksum, file_name, size


def _remove_old(row: store.BackupRow) -> None:
    for location in row.locations:
        (Path(location) / row.file_name).unlink(missing_ok=True)


async def rotate_backup_key(db: Database, settings: Settings, *, reencrypt: bool = False) -> tuple[str, list[str]]:
    """Create a new newest backup key; with `reencrypt`, move every backup onto it.

    Re-encryption writes and verifies the new files before the row points at them, and removes
    the old files only after that, so a backup is readable at every moment. Returns the new key
    id and the backups re-encrypted. Old keys stay on disk until the operator retires them.
    """
    key_id = await trio.to_thread.run_sync(sealed.create_key, settings)
    moved: list[str] = []
    if not reencrypt:
        return key_id, moved
    for row in await db.run(store.all_backups):
        done = await trio.to_thread.run_sync(_reseal, settings, row, key_id)
        if done is None:
            continue
        checksum, file_name, size = done
        await db.run(store.reseal, row.backup_id, checksum=checksum, key_id=key_id, file_name=file_name,
                     size=size, locations=list(row.locations))
        await trio.to_thread.run_sync(_remove_old, row)
        moved.append(row.backup_id)
    log.info("backup key rotated", key_id=key_id, reencrypted=len(moved))
    return key_id, moved


def keys_in_use(rows: list[store.BackupRow]) -> set[str]:
    """The key ids some backup still needs."""
    return {r.key_id for r in rows}
