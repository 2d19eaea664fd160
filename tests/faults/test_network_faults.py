"""A TCP proxy between the services and the broker, or the database, cut and slowed mid-clear.

The services' CLEARCARD_AMQP_URL or CLEARCARD_DATABASE_URL points at a FaultProxy
(tests/faults/proxy.py) in the test process; the test's own connection and commands go
straight, so the test sees what the services cannot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests.faults.harness import EVERY_SERVICE, SEPARATE, assert_exactly_once, cluster, fault_scenario, following
from tests.faults.proxy import FaultProxy
from tests.support.servers import AMQP_URL

pytestmark = fault_scenario()


@asynccontextmanager
async def proxy_to(url: str) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy.to_url(url)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        yield proxy
        nursery.cancel_scope.cancel()


async def test_broker_link_slowed_cut_and_down_for_a_while(tmp_path: Path, database_url: str) -> None:
    async with proxy_to(AMQP_URL) as proxy, cluster(
        tmp_path, database_url, layout=SEPARATE,
        service_urls=lambda amqp, db: (proxy.url(amqp), db),
    ) as (c, url), following(c, url) as requests:
        await requests.submit()
        follower = requests.follower
        await follower.until(follower.reached("prechecked"))
        proxy.delay = 0.05  # every frame, both ways
        await follower.until(follower.reached("reported"))
        assert await proxy.cut() >= len(EVERY_SERVICE)
        # the broker unreachable until every service has tried to reconnect at least once
        proxy.refuse()
        await proxy.refused_at_least(len(EVERY_SERVICE))
        proxy.accept()
        await follower.until(follower.reached("written_back"))
        await proxy.cut()
        await assert_exactly_once(c, requests)


async def test_database_link_slowed_and_cut(tmp_path: Path, database_url: str) -> None:
    async with proxy_to(database_url) as proxy, cluster(
        tmp_path, database_url, layout=SEPARATE,
        service_urls=lambda amqp, db: (amqp, proxy.url(db)),
    ) as (c, url), following(c, url) as requests:
        await requests.submit()
        follower = requests.follower
        await follower.until(follower.reached("prechecked"))
        proxy.delay = 0.01
        await follower.until(follower.reached("reported"))
        assert await proxy.cut() >= len(EVERY_SERVICE)
        proxy.refuse()
        await proxy.refused_at_least(2)
        proxy.accept()
        await follower.until(follower.reached("written_back"))
        await proxy.cut()
        await assert_exactly_once(c, requests)


async def test_gateway_link_cut_after_a_challenge_reply_left_the_gateway(tmp_path: Path, database_url: str) -> None:
    """The race behind the broker-drop test's rare `partial`, made deterministic: the gateway's
    link is cut right after its reply to `challenge` went out and before its ack did."""
    async with proxy_to(AMQP_URL) as proxy, cluster(
        tmp_path, database_url, layout=SEPARATE, amqp_url_for={"gateway": proxy.url},
    ) as (c, url), following(c, url) as requests:
        proxy.cut_after(b'"challenge"')
        await requests.submit()
        await assert_exactly_once(c, requests)
        assert proxy.triggered.is_set()
