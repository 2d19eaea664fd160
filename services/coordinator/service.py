"""The coordinator service: intake of authorized requests plus the device-clear runner."""

from __future__ import annotations

import trio

from services.auth.tokens import KeyRing
from services.coordinator.intake import Intake
from services.coordinator.ports import Ports
from services.coordinator.runner import Runner
from shared.bus.api import Bus
from shared.bus.middleware import traced
from shared.bus.rpc import RpcClient
from shared.bus.topology import COORDINATOR_REQUESTS, topology_for
from shared.config import Settings
from shared.db import Database

SERVICE = "coordinator"


async def run_coordinator(bus: Bus, db: Database, settings: Settings, *,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve clear requests and drive device clears until cancelled."""
    await bus.declare(topology_for(COORDINATOR_REQUESTS))
    async with RpcClient.open(bus, SERVICE) as rpc, trio.open_nursery() as nursery:
        ports = Ports(rpc)
        runner = Runner(bus, db, ports)
        await nursery.start(runner.run)
        intake = Intake(bus, db, KeyRing(settings.keys_dir), ports, runner)
        await nursery.start(lambda task_status: bus.consume(
            COORDINATOR_REQUESTS.name, traced(SERVICE, COORDINATOR_REQUESTS.name, intake.handle),
            prefetch=32, task_status=task_status))
        task_status.started()
