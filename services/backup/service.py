"""The backup service: answers `backup.take`, `backup.verify` and `backup.schedule`, and runs the
monthly round when it leads."""

from __future__ import annotations

from functools import partial

import trio

from services.backup import admin
from services.backup.api import check_copies, list_backups, restore_backup, take_backup, verify_backup
from services.backup.retention import prune
from services.backup.schedule import (
    BackupsScheduled,
    ScheduleBackups,
    SchedulePolicy,
    back_up_devices,
    run_scheduler,
    schedule_from_env,
)
from shared import audit
from shared.bus.api import Bus
from shared.bus.middleware import traced
from shared.bus.rpc import Operation, RpcClient, rpc_server
from shared.bus.topology import BACKUP, BACKUP_ADMIN, topology_for
from shared.config import Settings
from shared.db.pool import Database
from shared.errors import ClearCardError
from shared.messages.backup import BackupTaken, BackupVerified, TakeBackup, VerifyBackup
from shared.outages import keep_running

# backups taken at once: as many as the coordinators drive device clears (their database pool and
# the gateway's per-device order bound the real work)
PREFETCH = 256

# the command line imports the backup functions from here too (the console asks over the bus)
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
    schedule: SchedulePolicy | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Consume the backup queue, and take part in the monthly round, until cancelled."""
    policy = schedule_from_env() if schedule is None else schedule
    await bus.declare(topology_for(BACKUP, BACKUP_ADMIN))
    async with RpcClient.open(bus, "backup") as rpc, trio.open_nursery() as nursery:
        take = partial(_take, bus, db, settings, rpc)

        async def scheduled(msg: ScheduleBackups) -> BackupsScheduled:
            return await back_up_devices(db, take, msg)

        operations = {
            "take": Operation(TakeBackup, take),
            "verify": Operation(VerifyBackup, partial(_verify, db, settings)),
            "schedule": Operation(ScheduleBackups, scheduled),
        }
        handler = traced("backup", BACKUP.name, rpc_server(bus, operations))
        await nursery.start(partial(bus.consume, BACKUP.name, handler, prefetch=PREFETCH))
        # the console's list, verify and restore: the backups table stays this service's own
        answers = traced("backup", BACKUP_ADMIN.name, rpc_server(bus, admin.operations(db, settings)))
        await nursery.start(partial(bus.consume, BACKUP_ADMIN.name, answers))
        await nursery.start(partial(keep_running, "backup schedule",
                                    partial(run_scheduler, db, take, policy, after_round=partial(prune, db, settings))))
        task_status.started()
