"""The backup service: answers `backup.take` and `backup.verify` commands."""

from __future__ import annotations

from functools import partial

import trio

from services.backup.api import check_copies, list_backups, restore_backup, take_backup, verify_backup
from shared import audit
from shared.bus.api import Bus
from shared.bus.middleware import traced
from shared.bus.rpc import Operation, RpcClient, rpc_server
from shared.bus.topology import BACKUP, topology_for
from shared.config import Settings
from shared.db.pool import Database
from shared.errors import ClearCardError
from shared.messages.backup import BackupTaken, BackupVerified, TakeBackup, VerifyBackup

# the CLI and console import the backup functions from here too
__all__ = ["check_copies", "list_backups", "restore_backup", "run_backup", "take_backup", "verify_backup"]


async def _take(bus: Bus, db: Database, settings: Settings, rpc: RpcClient, msg: TakeBackup) -> BackupTaken:
    """`take`, with its outcome in the audit log."""
    try:
        taken = await take_backup(db, settings, rpc, msg)
    except ClearCardError as exc:
        await audit.record(bus, service="backup", subject="backup", action="backup.failed",
                           request_id=msg.request_id, device_id=msg.device_id, outcome="failed",
                           error_code=exc.code.value, detail={"period": msg.period, "reason": exc.message})
        raise
    await audit.record(bus, service="backup", subject="backup", action="backup.taken",
                       record_id=f"backup.taken:{taken.backup_id}", request_id=msg.request_id,
                       device_id=msg.device_id, outcome="ok",
                       detail={"period": msg.period, "backup_id": taken.backup_id,
                               "checksum": taken.checksum, "locations": taken.locations})
    return taken


async def _verify(db: Database, settings: Settings, msg: VerifyBackup) -> BackupVerified:
    return await verify_backup(db, settings, msg.backup_id)


async def run_backup(
    bus: Bus,
    db: Database,
    settings: Settings,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Consume the backup queue until cancelled."""
    await bus.declare(topology_for(BACKUP))
    async with RpcClient.open(bus, "backup") as rpc, trio.open_nursery() as nursery:
        operations = {
            "take": Operation(TakeBackup, partial(_take, bus, db, settings, rpc)),
            "verify": Operation(VerifyBackup, partial(_verify, db, settings)),
        }
        handler = traced("backup", BACKUP.name, rpc_server(bus, operations))
        await nursery.start(partial(bus.consume, BACKUP.name, handler))
        task_status.started()
