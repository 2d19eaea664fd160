"""PostgreSQL, then RabbitMQ, stopped for 30 s while clears run and new requests arrive.

Every service runs in its own process (notify and the console too). The verdict: no process
died, every request finished `succeeded` with one report and one write-back per type, no
dead-letter queue holds anything (the messages that met the outage were retried later, not
given up), and the audit chain verifies.

The outage lasts a fixed 30 s: its length is the fault itself, not a wait for something.
"""

from __future__ import annotations

from pathlib import Path

import trio

from tests.faults.broker_view import assert_no_dead_letters, queue_counts
from tests.faults.harness import (
    EVERY_SERVICE,
    Cluster,
    Requests,
    assert_applied_once,
    assert_audit_verifies,
    assert_exactly_once,
    cluster,
    diagnosis,
    fault_scenario,
    following,
)
from tests.faults.servers import broker_stopped, postgres_stopped

pytestmark = fault_scenario(480)

OUTAGE_S = 30
EVERYTHING = {name: (name,) for name in (*EVERY_SERVICE, "notify", "console")}


def log_of(c: Cluster, name: str) -> str:
    return c.processes[name].log.read_text(encoding="utf-8", errors="replace")


def assert_all_up(c: Cluster) -> None:
    assert c.exited() == {}, f"processes ended: {c.exited()}\n{c.logs()}"


async def wait_unparked(url: str, within: float) -> dict[str, int]:
    """The retry queues still holding messages after at most `within` seconds ({} once none does)."""
    deadline = trio.current_time() + within
    while True:
        parked = {q: n for q, n in (await queue_counts(url)).items() if ".retry." in q and n}
        if not parked or trio.current_time() > deadline:
            return parked
        await trio.sleep(1.0)


async def assert_nothing_left(c: Cluster, url: str, requests: Requests) -> None:
    """Every request succeeded, nothing is parked for a retry or dead-lettered, the chain verifies."""
    for request in requests.sent:
        finished = await requests.finish(request)
        assert finished["status"] == "succeeded", (finished, await diagnosis(c))
    # A retried message is back in its queue once its delay has passed. Audit records travel
    # apart from the clear, so one may still wait out a retry delay (up to a minute after an
    # outage of 30 s) when every request has finished: wait for the longest delay it can be in.
    parked = await wait_unparked(url, within=2 * 60.0 + 30.0)
    assert parked == {}, parked
    await assert_no_dead_letters(url)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(assert_applied_once, c.direct)
        nursery.start_soon(assert_audit_verifies, c.direct)
    assert_all_up(c)


async def test_postgres_stopped_for_30_s_while_clears_run_and_requests_arrive(
        tmp_path: Path, database_url: str) -> None:
    async with cluster(tmp_path, database_url, layout=EVERYTHING) as (c, url), following(c, url) as requests:
        await requests.submit()
        await requests.follower.until(requests.follower.reached("backed_up"))
        async with postgres_stopped():
            # requests arriving meanwhile: auth cannot read revocations, the coordinator cannot
            # store them; they come back after growing delays until the database is back
            for _ in range(2):
                await requests.submit()
                await trio.sleep(OUTAGE_S / 2)
            assert_all_up(c)
        await assert_exactly_once(c, requests)
        await assert_nothing_left(c, url, requests)
    # the outage did bite: requests that arrived meanwhile were retried later, not given up
    assert "message comes back later" in log_of(c, "auth")
    # and some long-running loop waited it out (which one depends on what was running when the
    # database stopped: with every clear already past its last write, the coordinator may have had
    # nothing to write for 30 s while audit anchoring or the console's event hub did)
    waited = [name for name in EVERYTHING if "waiting for the database or broker" in log_of(c, name)]
    assert waited, {name: log_of(c, name)[-2000:] for name in EVERYTHING}


async def test_rabbitmq_stopped_for_30_s_while_clears_run_and_requests_arrive(
        tmp_path: Path, database_url: str) -> None:
    async with cluster(tmp_path, database_url, layout=EVERYTHING) as (c, url), following(c, url) as requests:
        await requests.submit()
        await requests.follower.until(requests.follower.reached("reported"))
        await requests.submit()  # in the queues when the broker stops
        async with broker_stopped():
            await trio.sleep(OUTAGE_S)
            assert_all_up(c)
        await requests.submit()  # right after it is back, while every service reconnects
        await assert_exactly_once(c, requests)
        await assert_nothing_left(c, url, requests)
    for name in EVERYTHING:  # every process lost its connection and came back on its own
        assert "reconnected to RabbitMQ" in log_of(c, name), name
