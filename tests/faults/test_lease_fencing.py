"""Two coordinators, and a database pause longer than the lease on the one driving the clear.

Coordinator A starts the clear alone; its database link goes through a proxy. Mid-clear a
second coordinator B starts, and A's link is held (every byte waits, nothing is lost, as in a
network stall or a long GC pause on the database host) for five leases. B claims the expired
leases with new fencing numbers and finishes the clear; then A's link comes back and every
write A had pending for those devices matches nothing: A stops driving them. One write-back
per type, and every device's outcome recorded once, by B, and right.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import trio
import trio_asyncio

from tests.faults.harness import (
    DEVICES,
    FAST_RECOVERY,
    SEPARATE,
    assert_exactly_once,
    cluster,
    fault_scenario,
    following,
)
from tests.faults.proxy import FaultProxy
from tests.support.processes import cli

pytestmark = fault_scenario(240)

LEASE_S = float(FAST_RECOVERY["CLEARCARD_COORDINATOR_LEASE_SECONDS"])
# A's transactions stalled by the pause end after this, so their row locks do not hold B up
IDLE_TRANSACTION_S = {"CLEARCARD_DB_IDLE_TRANSACTION_TIMEOUT": "3"}
LAYOUT = {**SEPARATE, "coordinator-b": ("coordinator",)}


@asynccontextmanager
async def proxy_to(url: str) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy.to_url(url)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        yield proxy
        nursery.cancel_scope.cancel()


async def device_rows(database_url: str) -> list[dict[str, object]]:
    conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(database_url)
    try:
        rows = await trio_asyncio.aio_as_trio(conn.fetch)(
            "SELECT device_id, outcome, error_code, lease_epoch FROM device_clears ORDER BY device_id")
    finally:
        await trio_asyncio.aio_as_trio(conn.close)()
    return [dict(r) for r in rows]


async def test_a_coordinator_cut_off_longer_than_its_lease_writes_nothing_more(
        tmp_path: Path, database_url: str) -> None:
    async with proxy_to(database_url) as proxy, cluster(
        tmp_path, database_url, layout=LAYOUT, deferred=("coordinator-b",), overrides=IDLE_TRANSACTION_S,
        database_url_for={"coordinator": proxy.url},
    ) as (c, url), following(c, url) as requests:
        first = await requests.submit()
        follower = requests.follower
        await follower.until(follower.reached("backed_up"))
        proxy.blackhole()  # A's queries and commits wait, its leases expire
        await c.start("coordinator-b")
        with trio.move_on_after(LEASE_S * 5):
            await follower.until(lambda _: follower.finished(first.request_id) is not None, 60)
        proxy.restore()
        finished = await assert_exactly_once(c, requests)
        # A's pending writes reached the database after B's and were refused: A noticed
        a_log = c.processes["coordinator"].log
        with trio.fail_after(30):
            while True:
                if "stopped driving the device" in a_log.read_text(encoding="utf-8", errors="replace"):
                    break
                await trio.sleep(0.2)  # polling a child's log: there is no event to wait on
        assert c.exited() == {}, c.exited()
        exported = (await cli(c.direct, "audit", "export", "--json")).stdout.decode()

    assert {r["device_id"]: r["outcome"] for r in finished["results"]} == dict.fromkeys(DEVICES, "cleared")
    rows = await device_rows(database_url)
    assert [(r["device_id"], r["outcome"], r["error_code"]) for r in rows] == [
        (d, "cleared", None) for d in sorted(DEVICES)]
    assert all(int(str(r["lease_epoch"])) >= 2 for r in rows), rows  # B claimed each with a new number
    records = [json.loads(line) for line in exported.splitlines() if line]
    outcomes = Counter((r["device_id"], r["outcome"]) for r in records if r["action"] == "device.finished")
    assert outcomes == Counter({(d, "cleared"): 1 for d in DEVICES}), outcomes
    assert sum(r["action"] == "clear.finished" for r in records) == 1
