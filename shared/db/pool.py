"""The one owner of the asyncpg pool.

asyncpg is asyncio-only; trio-asyncio runs it inside the trio program. Each crossing costs a
few tenths of a millisecond, so repository code is written as plain asyncio functions taking a
connection, and a unit of work crosses once: `await db.run(fn, *args)`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

import asyncpg
import trio_asyncio

T = TypeVar("T")
P = ParamSpec("P")

Connection = asyncpg.Connection


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached or refused the connection."""


class Database:
    """A pool of connections; business code gets it through `async with Database.open(...)`."""

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self._pool = pool
        self.dsn = dsn

    @classmethod
    @asynccontextmanager
    async def open(cls, dsn: str, *, min_size: int = 1, max_size: int = 10) -> AsyncIterator[Database]:
        """Open a pool; needs a running trio-asyncio loop (`trio_asyncio.open_loop()`)."""
        try:
            pool = await trio_asyncio.aio_as_trio(asyncpg.create_pool)(
                dsn, min_size=min_size, max_size=max_size, command_timeout=60
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        try:
            yield cls(pool, dsn)
        finally:
            await trio_asyncio.aio_as_trio(pool.close)()

    async def run(
        self,
        fn: Callable[Concatenate[asyncpg.Connection, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run `fn(conn, ...)` in one transaction, crossing into asyncio once."""

        async def unit() -> T:
            async with self._pool.acquire() as conn, conn.transaction():
                return await fn(conn, *args, **kwargs)

        return await trio_asyncio.aio_as_trio(unit)()

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """One read outside a transaction block."""
        return await trio_asyncio.aio_as_trio(self._pool.fetch)(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        return await trio_asyncio.aio_as_trio(self._pool.execute)(query, *args)

    async def ping(self) -> bool:
        """True if the database answers (readiness)."""
        try:
            await self.fetch("SELECT 1")
        except (OSError, asyncpg.PostgresError):
            return False
        return True


async def claim_inbox(conn: asyncpg.Connection, consumer: str, message_id: str) -> bool:
    """Record a message as handled by `consumer`; False if it already was (a redelivery).

    Call inside the same transaction as the handler's effect, so effect and record commit together.
    """
    row = await conn.fetchrow(
        "INSERT INTO inbox (consumer, message_id) VALUES ($1, $2) "
        "ON CONFLICT DO NOTHING RETURNING 1",
        consumer,
        message_id,
    )
    return row is not None
