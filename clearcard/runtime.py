"""Running services in this process: the bus, the database and the services' nursery.

With nothing configured the bus is in-memory and PostgreSQL is embedded under the data dir,
so every service must share this process (`clearcard demo`, `clearcard serve all`).
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import ExitStack, asynccontextmanager
from typing import Any, Protocol

import trio
import trio_asyncio

from shared.bus.api import Bus
from shared.bus.memory import MemoryBus
from shared.config import Settings
from shared.db import Database
from shared.db.embedded import embedded_postgres
from shared.db.migrate import migrate
from shared.db.pool import pool_max_from_env


class ServiceEntry(Protocol):
    def __call__(self, bus: Bus, db: Database, settings: Settings, *,
                 task_status: trio.TaskStatus[None] = ...) -> Awaitable[None]: ...


# service name -> "module:function"; imported only when that service runs
SERVICES: dict[str, str] = {
    "audit": "services.audit.service:run_audit",
    "authority-sim": "services.authority_sim.service:run_authority_sim",
    "gateway": "device_gateway.service:run_gateway",
    "backup": "services.backup.service:run_backup",
    "auth": "services.auth.service:run_auth",
    "coordinator": "services.coordinator.service:run_coordinator",
    "notify": "services.notify.service:run_notify",
    "console": "services.console.service:run_console",
}
# start order: consumers of commands before their callers. ALL is what runs in-process for the
# demo, `clearcard clear` on the embedded bus and tests; `serve all` adds the HTTP console,
# which needs its port (CLEARCARD_HTTP) to itself.
ALL = tuple(name for name in SERVICES if name != "console")


def entry(name: str) -> ServiceEntry:
    module, _, function = SERVICES[name].partition(":")
    fn: ServiceEntry = getattr(importlib.import_module(module), function)
    return fn


def connection_name(names: Sequence[str]) -> str:
    """The broker connection's name for a process serving `names`: its reply queues are
    `<name>.reply.*`, which the service's broker account may declare (infra/rabbitmq/accounts.py)."""
    return f"clearcard.{names[0]}" if len(names) == 1 else "clearcard"


@asynccontextmanager
async def infrastructure(settings: Settings, *, run_migrations: bool = True,
                         name: str = "clearcard.cli") -> AsyncIterator[tuple[Bus, Database]]:
    """The bus and database for this process; needs to run inside `trio_asyncio.open_loop()`."""
    with ExitStack() as stack:
        dsn = settings.database_url or stack.enter_context(embedded_postgres(settings.data_dir))
        async with Database.open(dsn, max_size=pool_max_from_env()) as db:
            if run_migrations:
                await migrate(db)
            if settings.amqp_url is None:
                yield MemoryBus(), db
            else:
                from shared.bus.rabbitmq import RabbitBus

                async with RabbitBus.connect(settings.amqp_url, name=name, tls=settings.tls) as bus:
                    yield bus, db


async def start_services(nursery: trio.Nursery, names: Sequence[str], bus: Bus, db: Database,
                         settings: Settings) -> None:
    """Start each named service and wait until it is consuming, and this process's metrics writer."""
    from shared.metrics_store import run_flusher

    for name in names:
        run = entry(name)
        await nursery.start(_bind(run, identified(bus, name, settings), db, settings))
    # the process's counters reach the console's /metrics through PostgreSQL (shared/metrics_store.py)
    await nursery.start(lambda task_status: run_flusher(db, task_status=task_status))


def _bind(run: ServiceEntry, bus: Bus, db: Database, settings: Settings) -> Callable[..., Awaitable[None]]:
    async def start(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await run(bus, db, settings, task_status=task_status)

    return start


def identified(bus: Bus, name: str, settings: Settings) -> Bus:
    """The service's own view of the bus: signs what it publishes with its own key, checks what it
    consumes against shared/bus/senders.py."""
    from shared.authz.identity import IdentifiedBus, ServiceIdentity, ServiceKeys

    return IdentifiedBus(bus, ServiceIdentity(ServiceKeys(settings.identity_dir), name))


def resolve(names: Sequence[str]) -> list[str]:
    """Expand `all` and check names, keeping the start order."""
    wanted = set(SERVICES) if "all" in names else set(names)
    unknown = wanted - set(SERVICES)
    if unknown:
        raise ValueError(f"unknown service(s): {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(SERVICES)} or all")
    return [n for n in SERVICES if n in wanted]


def run_async(fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run an async entry point under trio with an asyncio loop for asyncpg/pika."""

    async def main() -> Any:
        async with trio_asyncio.open_loop():
            return await fn()

    return trio.run(main)
