"""SIGKILL of each service, alone in its own process, in the middle of a three-device clear.

Each service is killed when some device announces the step at which that service has work in
flight, then started again. The clear must still end `succeeded`, every device must show
exactly one report and one write-back per type, and the audit chain must verify.

The auth service only takes requests in: killing it cannot touch a clear already accepted, so
a second request is published while it is down; it waits in its durable queue, is decided
after the restart and finishes too (every device `already_cleared`: nothing is done twice).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.harness import SEPARATE, assert_exactly_once, cluster, fault_scenario, following

pytestmark = fault_scenario()

# service -> the step some device announces while that service has work in flight
KILL_AT = {
    "auth": "prechecked",
    "coordinator": "offline_uploaded",  # test_crashes.py covers prechecked, reported, written_back
    "backup": "prechecked",  # backups are being taken
    "audit": "reported",  # step records are being appended
    "gateway": "declaration_checked",  # challenges and write-backs are next
    "authority-sim": "reported",  # reports and declaration queries are in flight
}


@pytest.mark.parametrize("service", list(KILL_AT))
async def test_service_sigkilled_mid_clear_then_restarted(service: str, tmp_path: Path, database_url: str) -> None:
    async with cluster(tmp_path, database_url, layout=SEPARATE) as (c, url), \
            following(c, url) as requests:
        await requests.submit()
        await requests.follower.until(requests.follower.reached(KILL_AT[service]))
        await c.kill(service)
        if service == "auth":
            await requests.submit()  # queued while nobody decides requests
        await c.start(service)
        await assert_exactly_once(c, requests)
        for request in requests.sent[1:]:
            finished = requests.follower.finished(request.request_id)
            assert finished is not None and finished["status"] == "succeeded", finished
            assert {r["outcome"] for r in finished["results"]} <= {"cleared", "already_cleared"}, finished
