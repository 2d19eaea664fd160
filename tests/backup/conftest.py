"""Fixtures for the backup tests: settings, and the backup service beside a fake gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
import trio
from backup_fakes import GATEWAY, FakeGateway, Harness

from services.backup import run_backup
from shared.bus.memory import MemoryBus
from shared.bus.rpc import Operation, RpcClient, rpc_server
from shared.bus.topology import gateway_queue, topology_for
from shared.config import Settings
from shared.db import Database
from shared.messages.device import InvoicePageCommand, PeriodCommand
from tests.support.settings import local_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return local_settings(tmp_path / "data", backup_dirs=(tmp_path / "primary", tmp_path / "secondary"))


@pytest.fixture
async def harness(database: Database, settings: Settings) -> AsyncIterator[Harness]:
    bus = MemoryBus()
    gateway = FakeGateway()
    async with trio.open_nursery() as nursery:
        queue = gateway_queue(GATEWAY)
        await bus.declare(topology_for(queue))
        handler = rpc_server(bus, {"read_period": Operation(PeriodCommand, gateway.read_period),
                                   "read_invoices": Operation(InvoicePageCommand, gateway.read_invoices)})
        await nursery.start(partial(bus.consume, queue.name, handler))
        await nursery.start(run_backup, bus, database, settings)
        async with RpcClient.open(bus, "test") as rpc:
            yield Harness(bus, rpc, gateway)
        nursery.cancel_scope.cancel()
