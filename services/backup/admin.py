"""The backup service's answers to front ends: the list page by page, verify and restore.

The console asks here (queue clearcard.backup.admin) instead of reading `backups` or opening the
copies itself: the table and the backup locations are the backup service's alone. The restore
lands under this service's restore root (CLEARCARD_RESTORE_ROOT), checked here, where it writes.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import partial

from services.backup import store
from services.backup.api import restore_backup, verify_backup
from services.backup.restore_root import restore_target
from shared.bus.rpc import Operation
from shared.config import Settings
from shared.db.pool import Database
from shared.errors import ClearCardError, ErrorCode
from shared.messages.backup import (
    PAGE_BYTES,
    BackupList,
    BackupRestored,
    BackupVerified,
    ListBackups,
    RestoreBackup,
    VerifyBackup,
)


def _cursor(after: tuple[str, str] | None) -> tuple[datetime, str] | None:
    if after is None:
        return None
    try:
        return datetime.fromisoformat(after[0]), after[1]
    except ValueError:
        raise ClearCardError(ErrorCode.INVALID_REQUEST, f"not a list cursor: {after!r}") from None


async def list_page(db: Database, msg: ListBackups) -> BackupList:
    rows = await db.run(store.backups_page, after=_cursor(msg.after), limit=msg.limit, backup_id=msg.backup_id,
                        device_id=msg.device_id, branches=msg.branches)
    kept: list[store.BackupRow] = []
    size = 0
    for row in rows:
        size += len(json.dumps(row.listing(), ensure_ascii=False).encode("utf-8")) + 1
        if kept and size > PAGE_BYTES:
            break
        kept.append(row)
    # a page cut short by size, or a full one, may have more behind it; a short one is the last
    last = kept[-1] if kept and (len(kept) < len(rows) or len(rows) == msg.limit) else None
    return BackupList(backups=[r.listing() for r in kept],
                      after=None if last is None else (last.taken_at.isoformat(), last.backup_id))


async def verify(db: Database, settings: Settings, msg: VerifyBackup) -> BackupVerified:
    return await verify_backup(db, settings, msg.backup_id)


async def restore(db: Database, settings: Settings, msg: RestoreBackup) -> BackupRestored:
    row = await db.run(store.by_id, msg.backup_id)
    if row is None:
        raise ClearCardError(ErrorCode.INVALID_REQUEST, f"there is no backup {msg.backup_id!r}")
    target = restore_target(settings.restore_root, msg.to)
    where = await restore_backup(db, settings, msg.backup_id, target, force=msg.force)
    return BackupRestored(backup_id=msg.backup_id, device_id=row.device_id, restored_to=str(where))


def operations(db: Database, settings: Settings) -> dict[str, Operation]:
    """The ops of queue clearcard.backup.admin (routing keys backup.admin.<op>)."""
    return {
        "list": Operation(ListBackups, partial(list_page, db), remember=False),
        "verify": Operation(VerifyBackup, partial(verify, db, settings), remember=False),
        # remembered: a redelivered restore answers where the first one wrote, not twice
        "restore": Operation(RestoreBackup, partial(restore, db, settings)),
    }
