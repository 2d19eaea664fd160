"""The whole system in this process (MemoryBus + real PostgreSQL) and helpers to poke at it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import trio

from device_gateway.emulator.admin import show_device
from services.audit.log import search
from shared.bus.api import Bus, Delivery
from shared.bus.topology import EVENTS
from shared.db import Database
from tests.support import system as support
from tests.support.system import start_system

DEVICES = ("661500000001", "539900000004")
DEVICE_FIELDS = ("writebacks", "reports", "pin_tries_left", "offline_pending", "lock_date", "status")


class System(support.System):
    """The whole system (tests/support/system.py) with what the hostile tests look at."""

    def devices(self) -> dict[str, dict[str, Any]]:
        """What every emulated device holds (what device work would change)."""
        return {d: {k: show_device(self.settings, d)[k] for k in DEVICE_FIELDS} for d in DEVICES}

    async def send(self, exchange: str, routing_key: str, body: bytes, request_id: str,
                   headers: Mapping[str, Any], via: Bus | None = None) -> dict[str, Any]:
        """Publish a raw message and return the final event of `request_id`."""
        queue = await self.bus.declare_reply_queue()
        await self.bus.bind(queue, EVENTS, "clear.*")
        final: dict[str, Any] = {}
        done = trio.Event()

        async def on_event(delivery: Delivery) -> None:
            event = json.loads(delivery.body)
            if event.get("request_id") == request_id and event["event"] in (
                    "clear.rejected", "clear.finished", "clear.preview"):
                final.update(event)
                done.set()

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(lambda task_status: self.bus.consume(queue, on_event, task_status=task_status))
                await (via or self.bus).publish(exchange, routing_key, body, message_id=request_id,
                                                headers=headers)
                await done.wait()
                nursery.cancel_scope.cancel()
        return final

    async def audit_of(self, request_id: str, action: str) -> list[dict[str, Any]]:
        """The audit records of a request with `action`, once the audit service has stored one.

        The audit service appends asynchronously and PostgreSQL offers nothing to wait on, so
        this polls (bounded)."""
        with trio.fail_after(20):
            while True:
                rows = [r for r in await search(self.db, request_id=request_id) if r["action"] == action]
                if rows:
                    return rows
                await trio.sleep(0.02)


@pytest.fixture
async def system(tmp_path: Path, database: Database) -> AsyncIterator[System]:
    async with start_system(tmp_path, database, kind=System) as running:
        yield running
