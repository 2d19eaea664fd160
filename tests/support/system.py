"""The whole system in this process on a real PostgreSQL, on either bus: the one system fixture.

`start_system(tmp_path, database, fleet, env, transport=...)` starts every service on a fresh
data dir, on the in-memory bus (`"memory"`) or on RabbitMQ in a fresh vhost (`"rabbitmq"`), as
one contract: the same tests run on both (tests/e2e). The bus handed to the services is a
`HookedBus`, which lets a test look at (or change) a message as it is published: that is how
failures are injected mid-sequence without sleeping, the publisher waits for the hook.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import trio

from clearcard.follow import Followed, new_request_id, submit_and_follow
from clearcard.runtime import ALL, start_services
from services.audit.log import search
from shared.authz.identity import HEADER, ServiceIdentity, ServiceKeys
from shared.authz.roles import Role
from shared.authz.tokens import KeyRing
from shared.bus.api import Bus, Handler
from shared.bus.memory import MemoryBus
from shared.bus.topology import Topology
from shared.config import Settings
from shared.db import Database
from shared.messages.clear import ClearRequest
from tests.support.fleets import BRANCH, two_family_fleet
from tests.support.vhosts import fresh_vhost

Transport = Literal["memory", "rabbitmq"]
TRANSPORTS: tuple[Transport, ...] = ("memory", "rabbitmq")
# hook(exchange, routing_key, body) -> replacement body or None (keep it)
PublishHook = Callable[[str, str, bytes], Awaitable[bytes | None]]


class HookedBus:
    """A bus (either transport) with hooks that see every publish before it is sent.

    A body changed in transit no longer matches its sender's signature, and consumers refuse it.
    With `resign` set, a changed body is signed again as its sender: the sender itself sent it so.
    """

    def __init__(self, inner: Bus) -> None:
        self.inner = inner
        self.hooks: list[PublishHook] = []
        self.resign: ServiceKeys | None = None

    async def publish(self, exchange: str, routing_key: str, body: bytes, *,
                      message_id: str | None = None, correlation_id: str | None = None,
                      reply_to: str | None = None, headers: Mapping[str, Any] | None = None) -> None:
        for hook in list(self.hooks):
            replaced = await hook(exchange, routing_key, body)
            if replaced is not None:
                body = replaced
                if self.resign is not None and headers and HEADER in headers:
                    sender = ServiceIdentity(self.resign, str(headers[HEADER]).split(" ")[1])
                    headers = sender.sign(exchange, routing_key, body, message_id=message_id,
                                          correlation_id=correlation_id, reply_to=reply_to, headers=headers)
        await self.inner.publish(exchange, routing_key, body, message_id=message_id,
                                 correlation_id=correlation_id, reply_to=reply_to, headers=headers)

    async def declare(self, topology: Topology) -> None:
        await self.inner.declare(topology)

    async def consume(self, queue: str, handler: Handler, *, prefetch: int = 16,
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.inner.consume(queue, handler, prefetch=prefetch, task_status=task_status)

    async def declare_reply_queue(self) -> str:
        return await self.inner.declare_reply_queue()

    async def bind(self, queue: str, exchange: str, pattern: str) -> None:
        await self.inner.bind(queue, exchange, pattern)

    def __getattr__(self, name: str) -> Any:  # transport extras (dead letters, depths) pass through
        return getattr(self.inner, name)


@dataclass
class System:
    bus: HookedBus
    db: Database
    settings: Settings
    keys: KeyRing
    nursery: trio.Nursery
    env: dict[str, str]  # for `clearcard` commands against the same data dir, database and broker
    transport: Transport

    def token(self, role: Role = Role.OPERATOR) -> str:
        return self.keys.issue("test-operator", role, [BRANCH])

    async def clear(self, *, on_event: Callable[[dict[str, Any]], None] | None = None,
                    **fields: Any) -> Followed:
        """Submit a clear for BRANCH (period 2026-10, auto) and follow it to its final event."""
        base: dict[str, object] = {"request_id": new_request_id(), "branch_id": BRANCH,
                                   "period": "2026-10", "mode": "auto"}
        base.update(fields)
        with trio.fail_after(60):
            return await submit_and_follow(self.bus, ClearRequest.model_validate(base), self.token(),
                                           on_event=on_event)

    async def audit_where(self, wanted: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Audit records matching `wanted`, once the audit service stored one (it appends
        asynchronously and PostgreSQL offers nothing to wait on, so this polls, bounded)."""
        with trio.fail_after(20):
            while True:
                rows = [r for r in await search(self.db) if wanted(r)]
                if rows:
                    return rows
                await trio.sleep(0.02)


S = TypeVar("S", bound=System)


class SystemFactory(Protocol):
    """`make_system(fleet[, env])` (tests/e2e/conftest.py): the system on the test's transport."""

    def __call__(self, fleet: str | Path | None = None, env: Mapping[str, str] | None = None,
                 ) -> AbstractAsyncContextManager[System]: ...


def command_env(tmp_path: Path, database: Database, fleet: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment for `clearcard` commands, pointed at the test's system."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARCARD_", "OTEL_"))}
    env.update(CLEARCARD_DATA_DIR=str(tmp_path / "data"), CLEARCARD_DATABASE_URL=database.dsn,
               CLEARCARD_FLEET=str(fleet),
               # rich wraps long paths at the terminal width (80 without a terminal)
               COLUMNS="500", **extra)
    return env


@asynccontextmanager
async def start_system(tmp_path: Path, database: Database, fleet: str | Path | None = None,
                       env: Mapping[str, str] | None = None, *, transport: Transport = "memory",
                       services: Sequence[str] = ALL, kind: type[S] = System) -> AsyncIterator[S]:  # type: ignore[assignment]  # (the default is an S)
    """Every service in this process on `database` and the test's data dir.

    `fleet` is fleet-file text, a fleet file, or None for the two-family fleet; `env` adds
    CLEARCARD_* settings."""
    if isinstance(fleet, Path):
        fleet_file = fleet
    else:
        fleet_file = tmp_path / "fleet.toml"
        if fleet is not None:
            fleet_file.write_text(fleet, encoding="utf-8")
        elif not fleet_file.exists():
            two_family_fleet(fleet_file)
    async with AsyncExitStack() as stack:
        extra = dict(env or {})
        if transport == "rabbitmq":
            from shared.bus.rabbitmq import RabbitBus

            extra["CLEARCARD_AMQP_URL"] = await stack.enter_async_context(fresh_vhost())
            inner: Bus = await stack.enter_async_context(RabbitBus.connect(extra["CLEARCARD_AMQP_URL"],
                                                                           name="clearcard"))
        else:
            inner = MemoryBus()
        command = command_env(tmp_path, database, fleet_file, extra)
        settings = Settings.from_env({k: v for k, v in command.items() if k.startswith("CLEARCARD_")})
        bus = HookedBus(inner)
        async with trio.open_nursery() as nursery:
            await start_services(nursery, services, bus, database, settings)
            yield kind(bus, database, settings, KeyRing(settings.keys_dir), nursery, command, transport)
            nursery.cancel_scope.cancel()
