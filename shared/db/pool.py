"""The one owner of the asyncpg pool.

The URL's TLS settings are asyncpg's (libpq's names): `sslmode` up to `verify-full` (the
server's certificate chain against `sslrootcert`, and its host name), `sslcert`/`sslkey` for a
client certificate.

asyncpg is asyncio-only; trio-asyncio runs it inside the trio program. Each crossing costs a
few tenths of a millisecond, so repository code is written as plain asyncio functions taking a
connection, and a unit of work crosses once: `await db.run(fn, *args)`.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

import asyncpg
import trio
import trio_asyncio

T = TypeVar("T")
P = ParamSpec("P")

Connection = asyncpg.Connection


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached or refused the connection."""


# Errors that mean "the database is not there right now" (restart, cut link, full), not a bug:
# callers treat them as transient and try again (shared/outages.py adds the broker's).
INFRASTRUCTURE_ERRORS: tuple[type[Exception], ...] = (
    DatabaseUnavailable,
    OSError,  # includes TimeoutError: asyncpg's command_timeout
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.OperatorInterventionError,  # admin shutdown, cannot connect now: a restarting server
    asyncpg.InsufficientResourcesError,  # too many connections, disk full
    # a deadlock victim or serialization failure: the transaction rolled back whole, so running
    # it again is safe
    asyncpg.TransactionRollbackError,
    # asyncpg's protocol state broken by a connection lost mid-exchange ("cannot switch to state
    # N; another operation is in progress"), seen on server restarts; the pool replaces it
    asyncpg.exceptions._base.InternalClientError,
)


DEFAULT_POOL_MAX = 20
POOL_MAX_ENV = "CLEARCARD_DB_POOL_MAX"


def pool_max_from_env(environ: Mapping[str, str] | None = None) -> int:
    """CLEARCARD_DB_POOL_MAX, or the default: the pool size for a process's services.

    Every service of a process shares this pool. A PostgreSQL beside the services on a small
    machine commits fastest with a few connections per core; more connections only queue on
    its locks and cores (docs/performance.md). Raise it for a remote, larger database server.
    """
    env = os.environ if environ is None else environ
    raw = env.get(POOL_MAX_ENV, "").strip()
    if not raw:
        return DEFAULT_POOL_MAX
    try:
        size = int(raw)
    except ValueError:
        raise ValueError(f"{POOL_MAX_ENV} must be a whole number, got {raw!r}") from None
    if size < 1:
        raise ValueError(f"{POOL_MAX_ENV} must be at least 1, got {size}")
    return size


IDLE_TRANSACTION_ENV = "CLEARCARD_DB_IDLE_TRANSACTION_TIMEOUT"
DEFAULT_IDLE_TRANSACTION_TIMEOUT = 60.0


def idle_transaction_timeout_from_env(environ: Mapping[str, str] | None = None) -> float:
    """CLEARCARD_DB_IDLE_TRANSACTION_TIMEOUT (seconds), or the default.

    A transaction whose client went quiet that long (a stalled link, a paused process) is ended
    by PostgreSQL, so its row locks cannot hold up the other replicas (a coordinator taking over
    expired leases). Units of work here last milliseconds; asyncpg gives up on a statement after
    60 s anyway.
    """
    env = os.environ if environ is None else environ
    raw = env.get(IDLE_TRANSACTION_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_IDLE_TRANSACTION_TIMEOUT
    except ValueError:
        raise ValueError(f"{IDLE_TRANSACTION_ENV} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{IDLE_TRANSACTION_ENV} must be positive, got {raw!r}")
    return value


async def _reset(conn: asyncpg.Connection) -> None:
    """Returning a connection to the pool: nothing beyond asyncpg's own rollback of an open transaction.

    asyncpg's default reset sends `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`,
    one more round trip per unit of work. Pool connections never hold session state here:
    units are transactions (advisory locks are transaction-scoped), and session locks and
    LISTEN use dedicated connections (leader election, backup scheduler).
    """
    del conn  # nothing to undo


class Database:
    """A pool of connections; business code gets it through `async with Database.open(...)`."""

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self._pool = pool
        self.dsn = dsn

    @classmethod
    @asynccontextmanager
    async def open(cls, dsn: str, *, min_size: int = 1, max_size: int = 10) -> AsyncIterator[Database]:
        """Open a pool; needs a running trio-asyncio loop (`trio_asyncio.open_loop()`)."""
        idle_ms = str(round(idle_transaction_timeout_from_env() * 1000))
        try:
            pool = await trio_asyncio.aio_as_trio(asyncpg.create_pool)(
                dsn, min_size=min(min_size, max_size), max_size=max_size, command_timeout=60, reset=_reset,
                server_settings={"idle_in_transaction_session_timeout": idle_ms},
            )
        except ssl.SSLCertVerificationError as exc:
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL: its TLS certificate is not trusted ({exc.verify_message}); check "
                "sslrootcert and the host name in CLEARCARD_DATABASE_URL") from exc
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:  # the last: URL and TLS files
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

        # A unit of work is never cut in half by cancellation: a query cancelled mid-flight could
        # hand its connection back to the pool with an operation still in progress (asyncpg's
        # "another operation is in progress"). The unit finishes (bounded by command_timeout), and
        # the cancellation is delivered right after it.
        with trio.CancelScope(shield=True):
            result = await trio_asyncio.aio_as_trio(unit)()
        return result

    async def call(
        self,
        fn: Callable[Concatenate[asyncpg.Connection, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run `fn(conn, ...)` outside a transaction block: for a unit of one statement.

        Saves the BEGIN and COMMIT round trips of `run`; a single statement is atomic anyway.
        """

        async def unit() -> T:
            async with self._pool.acquire() as conn:
                return await fn(conn, *args, **kwargs)

        with trio.CancelScope(shield=True):  # as in `run`: never hand back a busy connection
            result = await trio_asyncio.aio_as_trio(unit)()
        return result

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
