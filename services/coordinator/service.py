"""The coordinator service: intake, fleet commands, the device-clear runner, and (on the elected
leader) the outbox relay and the monthly scheduler."""

from __future__ import annotations

import trio

from services.coordinator.bureau_watch import BureauWatch
from services.coordinator.clock import clock_for
from services.coordinator.commands import Commands
from services.coordinator.config import CoordinatorConfig
from services.coordinator.fleet_preview import preview_operation
from services.coordinator.intake import Intake
from services.coordinator.leader import lead
from services.coordinator.outbox import Relay
from services.coordinator.ports import Ports, RetryPolicy
from services.coordinator.runner import Runner
from services.coordinator.scheduler import Scheduler
from services.coordinator.topology import COORDINATOR_COMMANDS, COORDINATOR_RPC
from shared.authz import Authorizer, KeyRing
from shared.bus.api import Bus, Delivery
from shared.bus.middleware import traced, with_last_words
from shared.bus.rpc import RpcClient, rpc_server
from shared.bus.topology import COORDINATOR_REQUESTS, topology_for
from shared.config import Settings
from shared.db import Database
from shared.events import reject_given_up
from shared.outages import keep_running

SERVICE = "coordinator"


async def run_coordinator(bus: Bus, db: Database, settings: Settings, *,
                          config: CoordinatorConfig | None = None,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve clear requests and fleet commands, and drive device clears until cancelled."""
    config = config or CoordinatorConfig.from_env()
    await bus.declare(topology_for(COORDINATOR_REQUESTS, COORDINATOR_COMMANDS, COORDINATOR_RPC))
    relay = Relay(bus, db, poll=config.relay_poll)
    async with RpcClient.open(bus, SERVICE) as rpc, trio.open_nursery() as nursery:
        ports = Ports(rpc, gateway_deadline=config.gateway_deadline,
                      service_deadline=config.service_deadline,
                      retry=RetryPolicy(attempts=config.retry_attempts))
        runner = Runner(bus, db, ports, config, on_staged=relay.wake)
        await nursery.start(keep_running, "device clears", runner.run)
        # one authorizer (and revocation list) for both queues: tokens are checked again here,
        # revocations included, since nothing trusts the network
        authorizer = Authorizer(KeyRing(settings.keys_dir), db)
        intake = Intake(bus, db, authorizer, ports, runner, on_staged=relay.wake)
        commands = Commands(db, authorizer, runner, clock_for(settings), on_staged=relay.wake)
        clock = clock_for(settings)
        scheduler = Scheduler(db, runner, clock, config, thresholds=settings.thresholds, on_staged=relay.wake)
        watch = BureauWatch(db, ports, clock, config, poke=runner.poke, on_staged=relay.wake)

        async def duties() -> None:
            async with trio.open_nursery() as leader:
                leader.start_soon(relay.run)
                leader.start_soon(watch.run)  # the bureau's view and pending comparisons, scheduler or not
                if config.scheduler:
                    leader.start_soon(scheduler.run)

        await nursery.start(lambda task_status: lead(db.dsn, duties, task_status=task_status))
        async def last_words(delivery: Delivery, exc: BaseException) -> None:
            await reject_given_up(bus, SERVICE, delivery, exc)

        requests = with_last_words(intake.handle, last_words)
        await nursery.start(lambda task_status: bus.consume(
            COORDINATOR_REQUESTS.name, traced(SERVICE, COORDINATOR_REQUESTS.name, requests),
            prefetch=32, task_status=task_status))
        await nursery.start(lambda task_status: bus.consume(
            COORDINATOR_COMMANDS.name, traced(SERVICE, COORDINATOR_COMMANDS.name, commands.handle),
            prefetch=8, task_status=task_status))
        answers = rpc_server(bus, {"fleet_preview": preview_operation(db, clock_for(settings))})
        await nursery.start(lambda task_status: bus.consume(
            COORDINATOR_RPC.name, traced(SERVICE, COORDINATOR_RPC.name, answers), prefetch=4,
            task_status=task_status))
        task_status.started()
