"""Leader election among coordinator replicas with a PostgreSQL session advisory lock.

The lock lives on a dedicated connection: if the leader dies (even SIGKILL) PostgreSQL sees
the socket close and releases it, and another replica takes over within `poll` seconds. A
leader cut off from the database without a closed socket (a partition, a stalled link) is
ended by PostgreSQL's `idle_session_timeout` on that session, so the lock never stays with a
replica that cannot use it; the leader itself steps down when its pings stop answering.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import asyncpg
import structlog
import trio
import trio_asyncio

from shared.outages import OUTAGE_ERRORS, describe

log = structlog.get_logger("clearcard.coordinator.leader")
LEADER_LOCK = 0x434C4C44  # 'CLLD'


async def lead(dsn: str, duties: Callable[[], Awaitable[None]], *, poll: float = 0.5,
               task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Run `duties` whenever this replica holds the leader lock; runs until cancelled."""
    task_status.started()
    # the lock's session is pinged every 2 * poll seconds while it leads, every poll while it waits
    idle_limit_ms = str(int(max(10.0, poll * 20) * 1000))
    while True:
        try:
            conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(
                dsn, server_settings={"idle_session_timeout": idle_limit_ms})
        except (*OUTAGE_ERRORS, asyncpg.PostgresError) as exc:
            log.warning("leader election cannot reach PostgreSQL", error=str(exc))
            await trio.sleep(poll)
            continue
        try:
            while True:  # polling: PostgreSQL has no notification for a released advisory lock
                if await trio_asyncio.aio_as_trio(conn.fetchval)("SELECT pg_try_advisory_lock($1)", LEADER_LOCK):
                    break
                await trio.sleep(poll)
            log.info("this coordinator leads (scheduler, outbox relay)")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch, conn, nursery.cancel_scope, poll)
                await duties()
        except* OUTAGE_ERRORS as group:
            # the duties' nursery reports failures as a group: database or broker trouble means
            # stepping down and standing again, never the whole coordinator dying (a bug does)
            log.warning("lost the leader lock's connection", error=describe(group))
        finally:
            with (trio.CancelScope(shield=True), trio.move_on_after(2),
                  contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
                await trio_asyncio.aio_as_trio(conn.close)()
        await trio.sleep(poll)


async def _watch(conn: asyncpg.Connection, scope: trio.CancelScope, poll: float) -> None:
    """Step down when the lock's connection fails (the lock is then gone)."""
    while True:
        await trio.sleep(poll * 2)
        try:
            with trio.fail_after(max(5.0, poll * 4)):
                await trio_asyncio.aio_as_trio(conn.fetchval)("SELECT 1")
        except (*OUTAGE_ERRORS, asyncpg.PostgresError, trio.TooSlowError) as exc:
            log.warning("leader connection failed; stepping down", error=repr(exc))
            scope.cancel()
            return
