"""Shared fixtures: real PostgreSQL and RabbitMQ, each test isolated in its own database / vhost.

The helpers behind them live in tests/support/ (servers, vhosts, fleets, processes, the system).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio_asyncio

from shared.db import Database
from shared.db.migrate import migrate
from tests.support.servers import fresh_database


@pytest.fixture
async def aio_loop() -> AsyncIterator[None]:
    """A trio-asyncio loop for asyncpg (and pika) inside the trio test."""
    async with trio_asyncio.open_loop():
        yield


@pytest.fixture
async def database_url(aio_loop: None) -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    async with fresh_database() as url:
        yield url


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A migrated database for one test."""
    async with Database.open(database_url) as db:
        await migrate(db)
        yield db
