"""Fixtures for the bureau simulator tests: a fleet file and the simulator on the in-memory bus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from authority_fakes import FLEET, Bureau

from services.authority_sim import run_authority_sim
from shared.bus.memory import MemoryBus
from shared.bus.rpc import RpcClient
from shared.config import Settings
from shared.db import Database
from tests.support.settings import local_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(FLEET, encoding="utf-8")
    return local_settings(tmp_path / "data", backup_dirs=(), fleet_file=fleet)


@pytest.fixture
async def bureau(database: Database, settings: Settings) -> AsyncIterator[Bureau]:
    bus = MemoryBus()
    async with trio.open_nursery() as nursery:
        await nursery.start(run_authority_sim, bus, database, settings)
        async with RpcClient.open(bus, "test") as rpc:
            yield Bureau(bus, rpc)
        nursery.cancel_scope.cancel()
