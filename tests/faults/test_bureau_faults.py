"""The bureau failing: transient refusals and timeouts are retried and the clear still succeeds;
retries used up end AUTHORITY_UNAVAILABLE in plain words, and a later request resumes.

The bureau is reached over the bus (`authority.*` commands to the bureau simulator); there is
no HTTP bureau in this product. Refusals come from the simulator's fault table
(`services.authority_sim.service.inject_faults`); timeouts from stopping its process
(SIGSTOP), which keeps its broker connection and consumer but answers nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from services.authority_sim.service import inject_faults
from shared.bus.topology import AUTHORITY
from shared.db import Database
from shared.errors import ErrorCode
from tests.faults.broker_view import queue_counts
from tests.faults.harness import (
    DEVICES,
    SEPARATE,
    Requests,
    assert_applied_once,
    assert_audit_verifies,
    assert_exactly_once,
    cluster,
    fault_scenario,
    following,
)

pytestmark = fault_scenario()


def assert_bureau_unavailable(finished: dict[str, Any]) -> None:
    """Every device failed AUTHORITY_UNAVAILABLE."""
    assert finished["status"] == "failed", finished
    for result in finished["results"]:
        assert result["outcome"] == "failed", finished
        assert result["error"]["code"] == ErrorCode.AUTHORITY_UNAVAILABLE, finished


def assert_plain_words(finished: dict[str, Any]) -> None:
    """Each error says what happened for a person: the bureau, no codes, no routing keys."""
    for result in finished["results"]:
        message = result["error"]["message"]
        assert "bureau" in message.lower(), message
        assert ErrorCode.AUTHORITY_UNAVAILABLE.value not in message and "authority." not in message, message


async def resumes_and_clears_once(env: dict[str, str], requests: Requests) -> None:
    """A new request after the bureau is back: every device cleared, reported only once."""
    finished = await requests.finish(await requests.submit())
    assert finished["status"] == "succeeded", finished
    assert {r["outcome"] for r in finished["results"]} == {"cleared"}, finished
    await assert_applied_once(env)
    await assert_audit_verifies(env)


async def queued_for_the_bureau(url: str) -> int:
    """Messages (ready and unacknowledged) in the bureau's queue on this test's vhost."""
    return (await queue_counts(url)).get(AUTHORITY.name, 0)


async def test_transient_bureau_refusals_are_retried(tmp_path: Path, database_url: str) -> None:
    async with cluster(tmp_path, database_url, layout=SEPARATE) as (c, url), following(c, url) as requests:
        async with Database.open(database_url) as db:
            await inject_faults(db, 2, op="submit_report")
            await inject_faults(db, 3, op="writeback_package")
        await requests.submit()
        await assert_exactly_once(c, requests)


async def test_bureau_refusing_past_the_retries_fails_in_plain_words(tmp_path: Path, database_url: str) -> None:
    overrides = {"CLEARCARD_COORDINATOR_RETRY_ATTEMPTS": "3"}
    async with cluster(tmp_path, database_url, layout=SEPARATE, overrides=overrides) as (c, url), \
            following(c, url) as requests, Database.open(database_url) as db:
        await inject_faults(db, 1000, op="declaration_status")
        finished = await requests.finish(await requests.submit())
        assert_bureau_unavailable(finished)
        assert_plain_words(finished)
        await inject_faults(db, 0, op="declaration_status")
        await resumes_and_clears_once(c.direct, requests)


async def test_bureau_stopped_briefly_times_out_and_is_retried(tmp_path: Path, database_url: str) -> None:
    overrides = {"CLEARCARD_COORDINATOR_SERVICE_DEADLINE": "3"}
    async with cluster(tmp_path, database_url, layout=SEPARATE, overrides=overrides) as (c, url), \
            following(c, url) as requests:
        await requests.submit()
        # before the backup: a clear needs the bureau for one call after it (`clearance`), which
        # a device past `offline_uploaded` may already have had answered
        await requests.follower.until(requests.follower.reached("prechecked"))
        c.pause("authority-sim")
        try:
            # every device's report waits on the stopped bureau; one more message means a call
            # timed out and was sent again
            with trio.fail_after(60):
                while True:
                    if await queued_for_the_bureau(url) > len(DEVICES):
                        break
                    await trio.sleep(0.3)  # polling the broker's counters: no event to wait on
        finally:
            c.resume("authority-sim")
        await assert_exactly_once(c, requests)


async def test_bureau_stopped_past_the_retries_fails_then_resumes(tmp_path: Path, database_url: str) -> None:
    overrides = {"CLEARCARD_COORDINATOR_SERVICE_DEADLINE": "2", "CLEARCARD_COORDINATOR_RETRY_ATTEMPTS": "2"}
    async with cluster(tmp_path, database_url, layout=SEPARATE, overrides=overrides) as (c, url), \
            following(c, url) as requests:
        first = await requests.submit()
        # before the backup: a clear needs the bureau for one call after it (`clearance`), which
        # a device past `offline_uploaded` may already have had answered
        await requests.follower.until(requests.follower.reached("prechecked"))
        c.pause("authority-sim")
        try:
            finished = await requests.finish(first)
        finally:
            c.resume("authority-sim")
        assert_bureau_unavailable(finished)
        await resumes_and_clears_once(c.direct, requests)
        assert_plain_words(finished)  # last, so that everything above runs while this fails


