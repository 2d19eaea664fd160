"""The broker and the database restarted in the middle of a three-device clear.

Both are the machine's real servers (CI runs tests serially): RabbitMQ's application is stopped
and started (`rabbitmqctl stop_app; start_app`), PostgreSQL's cluster is restarted with
`pg_ctlcluster`. Either is brought back up in a `finally`, whatever the test did.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from tests.conftest import missing
from tests.e2e.processes import rabbitmqctl
from tests.faults.harness import SEPARATE, assert_exactly_once, cluster, following

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.slow, pytest.mark.fault,
              pytest.mark.timeout(180)]


@asynccontextmanager
async def broker_down() -> AsyncIterator[None]:
    """RabbitMQ's application stopped for the block, started again whatever happens."""
    await rabbitmqctl("stop_app")
    try:
        yield
    finally:
        with trio.CancelScope(shield=True):
            await rabbitmqctl("start_app")
            await rabbitmqctl("await_startup")


def _pg_cluster() -> list[str]:
    """`VERSION main` of the machine's PostgreSQL cluster (Debian's layout)."""
    if shutil.which("pg_ctlcluster") is None or not os.path.isdir("/etc/postgresql"):
        missing("pg_ctlcluster (Debian's PostgreSQL cluster tools)", "apt-get install postgresql")
    versions = sorted(os.listdir("/etc/postgresql"))
    return [versions[-1], "main"]


async def _pg(*args: str, check: bool = True) -> int:
    result = await trio.run_process(["pg_ctlcluster", "--skip-systemctl-redirect", *args],
                                    capture_stdout=True, capture_stderr=True, check=check)
    return result.returncode


async def _pg_ready() -> bool:
    result = await trio.run_process(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"], check=False)
    return result.returncode == 0


@asynccontextmanager
async def postgres_restarting() -> AsyncIterator[None]:
    """Yields once the cluster was restarted; afterwards it is up again even if the test failed."""
    version, name = _pg_cluster()
    try:
        await _pg(version, name, "restart", "-m", "fast")
        yield
    finally:
        with trio.CancelScope(shield=True), trio.fail_after(60):
            if not await _pg_ready():
                await _pg(version, name, "start", check=False)
            while True:
                if await _pg_ready():
                    break
                await trio.sleep(0.2)  # polling pg_isready: there is no event to wait on


async def test_broker_restarted_mid_clear(tmp_path: Path, database_url: str) -> None:
    async with cluster(tmp_path, database_url, layout=SEPARATE) as (c, url), following(c, url) as requests:
        await requests.submit()
        await requests.follower.until(requests.follower.reached("reported"))
        async with broker_down():
            pass  # every connection is gone and quorum queues restart with the node
        await assert_exactly_once(c, requests)


@pytest.mark.xfail(strict=False, reason="open defect: on a PostgreSQL restart some services' background tasks "
                   "(audit anchoring, registry updates, schedules) can still die on a connection error instead "
                   "of waiting it out; passed in most runs, failed in one CI-like run")
async def test_postgres_restarted_mid_clear(tmp_path: Path, database_url: str) -> None:
    async with cluster(tmp_path, database_url, layout=SEPARATE) as (c, url), following(c, url) as requests:
        await requests.submit()
        await requests.follower.until(requests.follower.reached("backed_up"))
        async with postgres_restarting():
            await assert_exactly_once(c, requests)
