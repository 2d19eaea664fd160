"""Repairing a backup's damaged or missing copies from an intact one, and re-encrypting under a new key."""

from __future__ import annotations

from pathlib import Path

import structlog
import trio

from services.backup import sealed, storage, store
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
    good = (Path(intact[0]) / row.file_name).read_bytes()
    if sealed.checksum(good) != row.checksum:  # changed since it was checked
        raise ClearCardError(ErrorCode.BACKUP_FAILED, f"the copy in {intact[0]} changed while repairing")
    repaired, failed = [], []
    for status in damaged:
        try:
            storage.write_atomically(Path(status.location), row.file_name, good)
        except storage.LocationFailed as exc:
            failed.append(f"{exc.location}: {exc.reason}")
            continue
        after, _ = storage.check_copy(settings, status.location, row.file_name, row.checksum)
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


def _reseal(settings: Settings, row: store.BackupRow, key_id: str) -> tuple[str, str, int] | None:
    """Re-encrypt one backup under `key_id` into every location; None if it already uses that key."""
    if row.key_id == key_id:
        return None
    snapshot, seen = storage.first_intact(settings, list(row.locations), row.file_name, row.checksum)
    if snapshot is None:
        raise ClearCardError(ErrorCode.BACKUP_FAILED, f"backup {row.backup_id} has no intact copy: "
                             + "; ".join(f"{s.location}: {s.reason}" for s in seen))
    blob = sealed.seal(snapshot, key_id, sealed.load_key(settings, key_id))
    checksum = sealed.checksum(blob)
    file_name = f"{row.device_id}/{checksum}.ccbk"
    locations = tuple(Path(p) for p in row.locations)
    try:
        storage.write_everywhere(locations, file_name, blob)
    except storage.LocationFailed as exc:
        raise ClearCardError(ErrorCode.BACKUP_FAILED, f"{exc.location}: {exc.reason}") from None
    bad = [s for s in storage.check_all(settings, list(row.locations), file_name, checksum) if not s.ok]
    if bad:
        raise ClearCardError(ErrorCode.BACKUP_FAILED, "; ".join(f"{s.location}: {s.reason}" for s in bad))
    return checksum, file_name, len(blob)


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
