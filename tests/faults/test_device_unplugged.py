"""A device pulled out in the middle of a transfer, then plugged in again.

The device answers each command only after a long latency, and it is unplugged (by the same
code as `clearcard emulator unplug`, in this process so that the marker lands while the
gateway's transfer is waiting) right after it announced `reported`: the coming write-back's
first transfer loses the device. That device fails DEVICE_OFFLINE, the others clear, and
nothing is applied twice; after `clearcard emulator plug` a new request resumes at the
write-back without reporting again.
"""

from __future__ import annotations

from pathlib import Path

from device_gateway.emulator.admin import unplug
from shared.config import Settings
from tests.faults.harness import (
    DEVICES,
    SEPARATE,
    assert_applied_once,
    assert_audit_verifies,
    cluster,
    fault_scenario,
    following,
    show,
)
from tests.support.processes import cli

pytestmark = fault_scenario()

PULLED = "539900000014"  # the tax control disk: its write-back writes a clock block first


async def test_device_unplugged_mid_transfer_fails_offline_then_clears_once(
        tmp_path: Path, database_url: str) -> None:
    async with cluster(tmp_path, database_url, layout=SEPARATE, latency_ms={PULLED: 700}) as (c, url), \
            following(c, url) as requests:
        first = await requests.submit()
        await requests.follower.until(requests.follower.reached("reported", PULLED), seconds=120)
        unplug(Settings.from_env(c.direct), PULLED)
        finished = await requests.finish(first)
        results = {r["device_id"]: r for r in finished["results"]}
        assert finished["status"] == "partial", finished
        assert results[PULLED]["outcome"] == "failed", finished
        assert results[PULLED]["error"]["code"] == "DEVICE_OFFLINE", finished
        assert "DEVICE_OFFLINE" not in results[PULLED]["error"]["message"], finished
        assert {results[d]["outcome"] for d in DEVICES if d != PULLED} == {"cleared"}, finished
        pulled = await show(c.direct, PULLED)
        assert pulled["plugged"] is False
        assert pulled["writebacks"] == [], pulled  # lost before the write-back reached it
        assert sorted(r["invoice_type"] for r in pulled["reports"]) == sorted(DEVICES[PULLED][2])

        await cli(c.direct, "emulator", "plug", PULLED)
        again = await requests.submit()
        finished = await requests.finish(again)
        assert finished["status"] == "succeeded", finished
        results = {r["device_id"]: r["outcome"] for r in finished["results"]}
        assert results == {**{d: "already_cleared" for d in DEVICES}, PULLED: "cleared"}, finished
        await assert_applied_once(c.direct)  # one report per type: the resumed clear did not report again
        await assert_audit_verifies(c.direct)
