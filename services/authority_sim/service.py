"""The bureau simulator as a service: answers `authority.*` commands from its own tables."""

from __future__ import annotations

from functools import partial
from typing import Any

import trio

from services.authority_sim import bureau, rules, store
from shared.bus.api import Bus
from shared.bus.middleware import traced
from shared.bus.rpc import Operation, rpc_server
from shared.bus.topology import AUTHORITY, topology_for
from shared.config import Settings
from shared.db.pool import Database
from shared.errors import ErrorCode
from shared.fleet import Fleet, load_fleet
from shared.messages.authority import (
    ClearanceRequest,
    DeclarationBatchQuery,
    DeclarationQuery,
    OfflineInvoicesUpload,
    PackageRequest,
    ReportSubmission,
)

PREFETCH = 256  # bureau calls at once: the coordinators' device clears in flight


async def seed_from_fleet(db: Database, settings: Settings) -> None:
    """Seed declarations from the fleet file and the clock once (a bad fleet file stops the start)."""
    fleet = Fleet(clock=None, devices=())
    if settings.fleet_file is not None:
        fleet = await trio.to_thread.run_sync(load_fleet, settings.fleet_file)
    clock = fleet.clock.isoformat() if fleet.clock is not None else None
    await db.run(store.seed, clock, rules.utc_now(), list(fleet.devices))


async def set_declaration(db: Database, device_id: str, *, declared: bool | None = None,
                          comparison: str | None = None) -> bool:
    """Change what the simulated bureau says about a fleet device (drills, tests); False if unknown."""
    if comparison is not None and comparison not in ("pass", "fail", "pending"):
        raise ValueError("comparison must be 'pass', 'fail' or 'pending'")
    return await db.run(store.set_declaration, device_id, declared, comparison)


async def inject_faults(db: Database, count: int, *, op: str = "*",
                        code: ErrorCode = ErrorCode.AUTHORITY_UNAVAILABLE) -> None:
    """Make the next `count` calls of `op` (an op name, or '*' for any) fail with `code`."""
    if count < 0:
        raise ValueError("count must be >= 0")
    await db.run(store.put_faults, op, count, code.value)


async def run_authority_sim(
    bus: Bus,
    db: Database,
    settings: Settings,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Consume the authority queue until cancelled."""
    await bus.declare(topology_for(AUTHORITY))
    await seed_from_fleet(db, settings)
    operations = {
        "upload_offline": Operation(OfflineInvoicesUpload, partial(bureau.upload_offline, db)),
        "submit_report": Operation(ReportSubmission, partial(bureau.submit_report, db)),
        "declaration_status": Operation(DeclarationQuery, partial(bureau.declaration_status, db)),
        "declaration_statuses": Operation(DeclarationBatchQuery, partial(bureau.declaration_statuses, db)),
        "writeback_package": Operation(PackageRequest, partial(bureau.writeback_package, db, settings.calendar)),
        "clearance": Operation(ClearanceRequest, partial(bureau.clearance, db, settings.calendar)),
    }
    handler = traced("authority-sim", AUTHORITY.name, rpc_server(bus, operations))
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(bus.consume, AUTHORITY.name, handler, prefetch=PREFETCH))
        task_status.started()


async def issued_packages(db: Database, device_id: str) -> list[dict[str, Any]]:
    """Write-back packages the simulated bureau issued for a device, oldest first."""
    return await db.run(store.packages, device_id)


run_authority = run_authority_sim  # the name clearcard.runtime starts the service by
