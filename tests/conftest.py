"""Shared fixtures: real PostgreSQL and RabbitMQ, each test isolated in its own database / vhost.

Missing infrastructure fails under CI=true and skips (saying how to start it) on a laptop.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import trio_asyncio

from shared.db import Database
from shared.db.migrate import migrate

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_ADMIN_DSN = os.environ.get(
    "CLEARCARD_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
AMQP_URL = os.environ.get("CLEARCARD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def missing(what: str, how: str) -> None:
    """Fail in CI, skip elsewhere, always saying how to start the missing service."""
    message = f"{what} is not reachable; start it with: {how}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
async def aio_loop() -> AsyncIterator[None]:
    """A trio-asyncio loop for asyncpg (and pika) inside the trio test."""
    async with trio_asyncio.open_loop():
        yield


@pytest.fixture
async def database_url(aio_loop: None) -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    name = f"cc_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        await trio_asyncio.aio_as_trio(admin)(f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError) as exc:
        missing(f"PostgreSQL at {PG_ADMIN_DSN} ({exc})",
                "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    await trio_asyncio.aio_as_trio(admin)(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A migrated database for one test."""
    async with Database.open(database_url) as db:
        await migrate(db)
        yield db
