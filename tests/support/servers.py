"""The PostgreSQL and RabbitMQ the tests (and benchmarks) run on, and what to do when one is missing.

Missing infrastructure fails under CI=true and skips (saying how to start it) on a laptop.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest
import trio_asyncio

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


async def admin_sql(admin_dsn: str, sql: str) -> None:
    """One statement on the server's admin database (CREATE/DROP DATABASE); asyncio-flavoured."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@asynccontextmanager
async def fresh_database(admin_dsn: str = PG_ADMIN_DSN, *, prefix: str = "cc_test") -> AsyncIterator[str]:
    """The URL of a new, empty database on the server, dropped afterwards (inside a trio-asyncio loop).

    An unreachable server is `missing` (fail in CI, skip elsewhere)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        await trio_asyncio.aio_as_trio(admin_sql)(admin_dsn, f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError) as exc:
        missing(f"PostgreSQL at {admin_dsn} ({exc})",
                "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")
    try:
        yield f"{admin_dsn.rsplit('/', 1)[0]}/{name}"
    finally:
        await trio_asyncio.aio_as_trio(admin_sql)(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
