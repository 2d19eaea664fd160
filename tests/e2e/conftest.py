"""The whole system in this process (MemoryBus + real PostgreSQL) on a fleet chosen per test.

`make_system(fleet_text)` starts every service on a fresh data dir; the bus lets a test look at
(or change) a message as it is published, which is how failures are injected mid-sequence
without sleeping: the publisher waits for the hook before it goes on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from clearcard.follow import Followed, new_request_id, submit_and_follow
from clearcard.runtime import ALL, start_services
from services.audit.log import search
from shared.authz.identity import HEADER, ServiceIdentity, ServiceKeys
from shared.authz.roles import Role
from shared.authz.tokens import KeyRing
from shared.bus.memory import MemoryBus
from shared.config import Settings
from shared.db import Database
from shared.messages.clear import ClearRequest
from tests.e2e.fleets import BRANCH, CLOCK

# hook(exchange, routing_key, body) -> replacement body or None (keep it)
PublishHook = Callable[[str, str, bytes], Awaitable[bytes | None]]


class HookedBus(MemoryBus):
    """The in-memory bus, with hooks that see every publish before it is routed.

    A body changed in transit no longer matches its sender's signature, and consumers refuse it.
    With `resign` set, a changed body is signed again as its sender: the sender itself sent it so.
    """

    def __init__(self) -> None:
        super().__init__()
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
        await super().publish(exchange, routing_key, body, message_id=message_id,
                              correlation_id=correlation_id, reply_to=reply_to, headers=headers)


def fleet_text(*devices: str, clock: str | None = CLOCK) -> str:
    """A fleet file: an optional emulated clock and [[device]] tables (see tests/e2e/fleets.py)."""
    return (f'clock = "{clock}"\n\n' if clock else "") + "\n".join(devices)


def one_device(device_id: str = "661500000001", **fields: object) -> str:
    """A ready-to-clear UKey of BRANCH (types 004 and 007), changed by `fields` of the fleet file."""
    values: dict[str, object] = {
        "id": device_id, "family": "ukey", "taxpayer_id": "91420100MA4K0001XK", "branch": BRANCH,
        "machine_no": 0, "pin": "12345678", "period": "2026-10", "invoice_types": ["004", "007"],
        "invoices_per_type": 5,
    }
    values.update(fields)
    lines = ["[[device]]"]
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {str(value).lower()}")
        elif isinstance(value, int):
            lines.append(f"{key} = {value}")
        elif isinstance(value, list):
            lines.append(f"{key} = [" + ", ".join(f'"{v}"' for v in value) + "]")
        else:
            lines.append(f'{key} = "{value}"')
    return "\n".join(lines) + "\n"


@dataclass
class System:
    bus: HookedBus
    db: Database
    settings: Settings
    keys: KeyRing
    nursery: trio.Nursery

    def token(self) -> str:
        return self.keys.issue("test-operator", Role.OPERATOR, [BRANCH])

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


SystemFactory = Callable[[str], Any]


@pytest.fixture
async def make_system(tmp_path: Path, database: Database) -> AsyncIterator[SystemFactory]:
    """Start the whole system on a fleet: `async with make_system(text[, env]) as system: ...`."""

    @asynccontextmanager
    async def start(text: str, env: Mapping[str, str] | None = None) -> AsyncIterator[System]:
        fleet = tmp_path / "fleet.toml"
        fleet.write_text(text, encoding="utf-8")
        settings = Settings.from_env({
            "CLEARCARD_DATA_DIR": str(tmp_path / "data"),
            "CLEARCARD_FLEET": str(fleet),
            "CLEARCARD_DATABASE_URL": database.dsn,
            **(env or {}),
        })
        bus = HookedBus()
        async with trio.open_nursery() as nursery:
            await start_services(nursery, ALL, bus, database, settings)
            yield System(bus, database, settings, KeyRing(settings.keys_dir), nursery)
            nursery.cancel_scope.cancel()

    yield start
