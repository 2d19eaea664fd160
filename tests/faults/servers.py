"""Stopping and starting the test servers themselves: RabbitMQ's application and a PostgreSQL cluster.

Which servers: the ones the tests talk to. `CLEARCARD_TEST_DATABASE_URL` names the database
server (its host and port, for `pg_isready`) and `CLEARCARD_TEST_PG_CLUSTER` the Debian cluster
behind it (`"15 outages"`; default: the newest version's `main`, the machine's own server).
`rabbitmqctl` talks to the node named by `RABBITMQ_NODENAME` (default: the machine's node), so
an engineer with private servers points all three variables at them and the shared servers are
never touched. CI runs on the default servers.

Each server is brought back up in a `finally`, whatever the test did.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio

from tests.support.servers import PG_ADMIN_DSN, missing

PG_CLUSTER_ENV = "CLEARCARD_TEST_PG_CLUSTER"


async def rabbitmqctl(*args: str, check: bool = True) -> str:
    """rabbitmqctl on the node of RABBITMQ_NODENAME (inherited by the child); its stdout."""
    done = await trio.run_process(["rabbitmqctl", "-q", *args], capture_stdout=True, capture_stderr=True,
                                  check=check)
    return done.stdout.decode()


@asynccontextmanager
async def broker_stopped() -> AsyncIterator[None]:
    """RabbitMQ's application stopped for the block (every connection gone), started again after."""
    await rabbitmqctl("stop_app")
    try:
        yield
    finally:
        with trio.CancelScope(shield=True):
            await rabbitmqctl("start_app")
            await rabbitmqctl("await_startup")


def pg_cluster() -> tuple[str, str]:
    """(version, name) of the PostgreSQL cluster behind the test database."""
    if shutil.which("pg_ctlcluster") is None or not os.path.isdir("/etc/postgresql"):
        missing("pg_ctlcluster (Debian's PostgreSQL cluster tools)", "apt-get install postgresql")
    named = os.environ.get(PG_CLUSTER_ENV, "").split()
    if len(named) == 2:
        return named[0], named[1]
    versions = sorted(os.listdir("/etc/postgresql"), key=lambda v: [int(p) for p in v.split(".") if p.isdigit()])
    return versions[-1], "main"


async def _pg(*args: str, check: bool = True) -> int:
    result = await trio.run_process(["pg_ctlcluster", "--skip-systemctl-redirect", *args],
                                    capture_stdout=True, capture_stderr=True, check=check)
    return result.returncode


async def pg_ready() -> bool:
    """`pg_isready` on the test database's host and port."""
    parts = urlsplit(PG_ADMIN_DSN)
    result = await trio.run_process(["pg_isready", "-q", "-h", parts.hostname or "127.0.0.1",
                                     "-p", str(parts.port or 5432)], check=False)
    return result.returncode == 0


async def _until_ready() -> None:
    with trio.fail_after(60):
        while True:
            if await pg_ready():
                return
            await trio.sleep(0.2)  # polling pg_isready: there is no event to wait on


@asynccontextmanager
async def _up_again_afterwards() -> AsyncIterator[None]:
    version, name = pg_cluster()
    try:
        yield
    finally:
        with trio.CancelScope(shield=True):
            if not await pg_ready():
                await _pg(version, name, "start", check=False)
            await _until_ready()


@asynccontextmanager
async def postgres_restarting() -> AsyncIterator[None]:
    """Yields once the cluster was restarted (fast shutdown); up again afterwards in any case."""
    version, name = pg_cluster()
    async with _up_again_afterwards():
        await _pg(version, name, "restart", "-m", "fast")
        yield


@asynccontextmanager
async def postgres_stopped() -> AsyncIterator[None]:
    """The cluster stopped (fast shutdown: every session ends) for the block, started again after."""
    version, name = pg_cluster()
    async with _up_again_afterwards():
        await _pg(version, name, "stop", "-m", "fast")
        yield
        await _pg(version, name, "start")
        await _until_ready()
