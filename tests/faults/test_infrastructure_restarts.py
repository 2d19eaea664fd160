"""The broker and the database restarted in the middle of a three-device clear.

Both are the machine's real servers (CI runs tests serially): RabbitMQ's application is stopped
and started (`rabbitmqctl stop_app; start_app`), PostgreSQL's cluster is restarted with
`pg_ctlcluster`. Either is brought back up in a `finally`, whatever the test did.
"""

from __future__ import annotations

from pathlib import Path

from tests.faults.harness import SEPARATE, assert_exactly_once, cluster, fault_scenario, following
from tests.faults.servers import broker_stopped, postgres_restarting

pytestmark = fault_scenario()


async def test_broker_restarted_mid_clear(tmp_path: Path, database_url: str) -> None:
    async with cluster(tmp_path, database_url, layout=SEPARATE) as (c, url), following(c, url) as requests:
        await requests.submit()
        await requests.follower.until(requests.follower.reached("reported"))
        async with broker_stopped():
            pass  # every connection is gone and quorum queues restart with the node
        await assert_exactly_once(c, requests)


async def test_postgres_restarted_mid_clear(tmp_path: Path, database_url: str) -> None:
    async with cluster(tmp_path, database_url, layout=SEPARATE) as (c, url), following(c, url) as requests:
        await requests.submit()
        await requests.follower.until(requests.follower.reached("backed_up"))
        async with postgres_restarting():
            await assert_exactly_once(c, requests)
