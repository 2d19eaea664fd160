"""A multi-device clear survives SIGKILLs of the coordinator (at several steps) and of the
gateway, and the broker closing every connection twice: each still ends `succeeded`, every
device shows exactly one report and one write-back per type, and the audit chain verifies.

Here the auth, backup, audit and bureau services share one process (test_service_kills.py
runs each alone); the coordinator runs with a 2 s lease so recovery is quick.
"""

from __future__ import annotations

from pathlib import Path

from tests.faults.harness import GROUPED, assert_exactly_once, cluster, fault_scenario, following
from tests.faults.servers import rabbitmqctl

pytestmark = fault_scenario()


async def test_coordinator_sigkilled_at_several_steps(tmp_path: Path, database_url: str) -> None:
    async with cluster(tmp_path, database_url, layout=GROUPED) as (c, url), following(c, url) as requests:
        await requests.submit()
        for step in ("prechecked", "reported", "written_back"):
            await requests.follower.until(requests.follower.reached(step))
            await c.restart("coordinator")
        await assert_exactly_once(c, requests)


async def test_gateway_sigkilled_after_reported(tmp_path: Path, database_url: str) -> None:
    async with cluster(tmp_path, database_url, layout=GROUPED) as (c, url), following(c, url) as requests:
        await requests.submit()
        await requests.follower.until(requests.follower.reached("reported"))
        await c.restart("gateway")
        await assert_exactly_once(c, requests)


async def test_broker_closes_every_connection_twice(tmp_path: Path, database_url: str) -> None:
    async with cluster(tmp_path, database_url, layout=GROUPED) as (c, url), following(c, url) as requests:
        await requests.submit()
        for step in ("backed_up", "declaration_checked"):
            await requests.follower.until(requests.follower.reached(step))
            await rabbitmqctl("close_all_connections", "fault test")
        await assert_exactly_once(c, requests)
