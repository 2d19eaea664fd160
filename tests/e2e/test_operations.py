"""What operators must know in time, end to end: the bureau's view, pending comparisons, the tax calendar."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import trio

from clearcard.runtime import identified
from clearcard.status_command import device_status
from device_gateway.emulator.admin import show_device
from services.authority_sim import issued_packages, set_declaration
from services.coordinator.bureau_watch import BureauWatch
from services.coordinator.clock import Clock
from services.coordinator.config import CoordinatorConfig
from services.coordinator.ports import Ports
from shared.bus.api import Delivery
from shared.bus.rpc import RpcClient
from shared.bus.topology import EVENTS
from tests.support.fleets import CLOCK, fleet_text, one_device
from tests.support.system import SystemFactory

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
DEVICE = "661500000001"


class Finished:
    """Every `clear.finished` event the system publishes, for waiting on one without sleeping."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.changed = trio.Event()

    async def on(self, delivery: Delivery) -> None:
        self.seen.append(json.loads(delivery.body))
        self.changed.set()
        self.changed = trio.Event()

    async def first(self, prefix: str) -> dict[str, Any]:
        with trio.fail_after(60):
            while not (found := [e for e in self.seen if e["request_id"].startswith(prefix)]):
                await self.changed.wait()
        return found[0]


async def test_a_pending_comparison_is_awaited_and_clears_once_it_passes(make_system: SystemFactory) -> None:
    fleet = fleet_text(one_device(DEVICE, comparison="pending", comparison_pending_minutes=-1))
    async with make_system(fleet) as system:
        finished = Finished()
        queue = await system.bus.declare_reply_queue()
        await system.bus.bind(queue, EVENTS, "clear.finished")
        await system.nursery.start(lambda task_status: system.bus.consume(queue, finished.on, task_status=task_status))
        followed = await system.clear()
        [result] = followed.final["results"]
        assert result["outcome"] == "failed" and result["error"]["code"] == "COMPARISON_PENDING", result
        assert "Awaiting the bureau's comparison" in result["error"]["message"]
        [row] = await device_status(system.db, system.settings, None)
        assert (row["filing"], row["comparison"], row["last_result"]) == ("filed", "pending", "COMPARISON_PENDING")
        assert show_device(system.settings, DEVICE)["writebacks"] == []

        # the bureau asked again while still comparing: nothing is resumed, nothing fails
        coordinator = identified(system.bus, "coordinator", system.settings)
        async with RpcClient.open(coordinator, "coordinator") as rpc:
            watch = BureauWatch(system.db, Ports(rpc), Clock(datetime.fromisoformat(CLOCK)),
                                CoordinatorConfig(retry_every=0))
            assert await watch.tick() is None
            await set_declaration(system.db, DEVICE, comparison="pass")  # the bureau finished comparing
            fleet_id = await watch.tick()
        assert fleet_id is not None and fleet_id.startswith("await-")
        resumed = await finished.first(fleet_id)
        assert resumed["status"] == "succeeded", resumed  # no operator action
        assert len(show_device(system.settings, DEVICE)["writebacks"]) == 2
        views = await system.db.fetch("SELECT period, filing, comparison FROM bureau_views WHERE device_id = $1",
                                      DEVICE)
        assert [(v["period"], v["filing"], v["comparison"]) for v in views] == [("2026-10", "filed", "pass")]
        [row] = await device_status(system.db, system.settings, None)
        assert row["open_period"] == "2026-11" and row["filing"] == "not_filed" and not row["bureau"]["due"]


async def test_a_moved_deadline_clears_after_the_15th_and_locks_at_the_next_periods_deadline(
        make_system: SystemFactory, tmp_path: Path) -> None:
    calendar = tmp_path / "calendar.toml"
    calendar.write_text('[calendar]\nsource = "test: holidays moved both deadlines"\n\n[deadlines]\n'
                        '"2026-10" = "2026-11-18"\n"2026-11" = "2026-12-21"\n', encoding="utf-8")
    fleet = fleet_text(one_device(DEVICE), clock="2026-11-17T09:00:00+08:00")  # after the 15th
    async with make_system(fleet, {"CLEARCARD_TAX_CALENDAR": str(calendar)}) as system:
        [before] = await device_status(system.db, system.settings, None)
        assert before["lock_date"] == "2026-11-18" and before["days_left"] == 1 and before["risk"] == "red"
        followed = await system.clear()
        assert followed.final["status"] == "succeeded", followed.final
        assert show_device(system.settings, DEVICE)["lock_date"] == "2026-12-21"
        [package] = await issued_packages(system.db, DEVICE)
        assert package["next_lock_date"] == "2026-12-21"
        [after] = await device_status(system.db, system.settings, None)
        assert after["lock_date"] == "2026-12-21" and after["days_left"] == 34 and after["risk"] == "green"


async def test_without_the_moved_deadline_the_same_device_is_locked(make_system: SystemFactory) -> None:
    fleet = fleet_text(one_device(DEVICE), clock="2026-11-17T09:00:00+08:00")
    async with make_system(fleet) as system:
        followed = await system.clear()
        [result] = followed.final["results"]
        assert result["error"]["code"] == "DEVICE_LOCKED", result
        [row] = await device_status(system.db, system.settings, None)
        assert row["lock_date"] == "2026-11-15" and row["days_left"] == -2
