"""Fleet operations, cancellation and the scheduler on the whole system in this process."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from clearcard.runtime import ALL, start_services
from device_gateway.emulator.admin import show_device
from services.coordinator.clock import Clock
from services.coordinator.config import CoordinatorConfig
from services.coordinator.ports import Ports
from services.coordinator.runner import Runner
from services.coordinator.scheduler import Scheduler
from shared.authz.roles import Role
from shared.authz.tokens import KeyRing
from shared.bus.api import Delivery
from shared.bus.memory import MemoryBus
from shared.bus.topology import COMMANDS, EVENTS
from shared.config import Settings
from shared.db import Database
from shared.messages.codec import encode
from shared.messages.fleet import ClearCancel, FleetClear, FleetFilters
from tests.support.fleets import CLOCK, device

pytestmark = pytest.mark.postgres
BRANCHES = ["wuhan-hankou", "wuhan-wuchang", "beijing-haidian"]


def fleet_file(path: Path) -> Path:
    lines = [f'clock = "{CLOCK}"\n']
    for i, branch in enumerate(BRANCHES):
        lines.append(device(f"66150000010{i}", "ukey", "91420100MA4K0001XK", ["004", "007"], branch=branch))
        lines.append(device(f"53990000010{i}", "tax_control_disk", "91110000MA01A0BC3M", ["004"], branch=branch,
                            machine_no=1))
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


class Events:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.changed = trio.Event()

    async def on(self, delivery: Delivery) -> None:
        self.seen.append(json.loads(delivery.body))
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, predicate: Any) -> list[dict[str, Any]]:
        with trio.fail_after(60):
            while not (found := [e for e in self.seen if predicate(e)]):
                await self.changed.wait()
        return found


@pytest.fixture
async def running(tmp_path: Path, database: Database) -> AsyncIterator[tuple[MemoryBus, Settings, Events]]:
    settings = Settings.from_env({"CLEARCARD_DATA_DIR": str(tmp_path / "data"),
                                  "CLEARCARD_FLEET": str(fleet_file(tmp_path / "fleet.toml")),
                                  "CLEARCARD_DATABASE_URL": database.dsn})
    from services.backup.sealed import current_key

    current_key(settings)  # work around a race in the backup key's first creation (reported to its owner)
    bus = MemoryBus()
    events = Events()
    async with trio.open_nursery() as nursery:
        await start_services(nursery, ALL, bus, database, settings)
        queue = await bus.declare_reply_queue()
        for pattern in ("clear.*", "fleet.*"):
            await bus.bind(queue, EVENTS, pattern)
        await nursery.start(lambda task_status: bus.consume(queue, events.on, task_status=task_status))
        yield bus, settings, events
        nursery.cancel_scope.cancel()


def token(settings: Settings, role: Role = Role.ADMIN, branches: tuple[str, ...] = ("*",)) -> dict[str, str]:
    """A bearer token: fleet commands come from outside (a public queue), like clear requests."""
    keys = KeyRing(settings.keys_dir)
    return {"authorization": f"Bearer {keys.issue('fleet-op', role, list(branches))}"}


async def test_fleet_clear_fans_out_per_branch_with_filters(
        running: tuple[MemoryBus, Settings, Events]) -> None:
    bus, settings, events = running
    command = FleetClear(fleet_id="fleet-1", filters=FleetFilters(branches=["*"], families=["ukey"], within_days=30))
    for _ in range(2):  # a duplicate command fans out nothing more
        await bus.publish(COMMANDS, "fleet.clear", encode(command), message_id="fleet-1", headers=token(settings))
    [accepted] = await events.wait_for(lambda e: e["event"] == "fleet.accepted")
    assert accepted["devices"] == 3 and len(accepted["requests"]) == 3
    finished = [await events.wait_for(lambda e, r=r: e["event"] == "clear.finished" and e["request_id"] == r)
                for r in accepted["requests"]]
    assert all(f[0]["status"] == "succeeded" for f in finished)
    for i in range(3):
        assert len(show_device(settings, f"66150000010{i}")["writebacks"]) == 2
        assert show_device(settings, f"53990000010{i}")["writebacks"] == []  # filtered out by family


async def test_fleet_clear_needs_a_token_covering_the_branches(
        running: tuple[MemoryBus, Settings, Events]) -> None:
    bus, settings, events = running
    command = FleetClear(fleet_id="fleet-2", filters=FleetFilters(branches=["wuhan-wuchang"]))
    await bus.publish(COMMANDS, "fleet.clear", encode(command), message_id="fleet-2",
                      headers=token(settings, Role.OPERATOR, ("wuhan-hankou",)))
    [rejected] = await events.wait_for(lambda e: e["event"] == "fleet.rejected")
    assert rejected["error_code"] == "PERMISSION_DENIED"


async def test_cancel_before_writeback_skips_the_devices(
        running: tuple[MemoryBus, Settings, Events], database: Database) -> None:
    bus, settings, events = running
    # hold the report (which brings the package with it): the cancel lands while both devices
    # wait there, before the write-back
    gate = trio.Event()
    await database.execute("UPDATE clear_requests SET cancelled = false")
    command = FleetClear(fleet_id="fleet-3", filters=FleetFilters(branches=["wuhan-hankou"]))
    original = bus.publish

    async def held(exchange: str, routing_key: str, body: bytes, **kw: Any) -> None:
        if routing_key == "authority.clearance":
            await gate.wait()
        await original(exchange, routing_key, body, **kw)

    bus.publish = held  # type: ignore[method-assign]
    await bus.publish(COMMANDS, "fleet.clear", encode(command), message_id="fleet-3", headers=token(settings))
    [accepted] = await events.wait_for(lambda e: e["event"] == "fleet.accepted")
    [request_id] = accepted["requests"]
    with trio.fail_after(30):
        while len([e for e in events.seen
                   if e["event"] == "clear.progress" and e["step"] == "offline_uploaded"]) < 2:
            await events.changed.wait()
    denied = token(settings, Role.VIEWER, ("wuhan-hankou",))
    await bus.publish(COMMANDS, "clear.cancel", encode(ClearCancel(request_id=request_id)), message_id="c0",
                      headers=denied)
    await events.wait_for(lambda e: e["event"] == "clear.cancelled" and not e["accepted"])
    await bus.publish(COMMANDS, "clear.cancel", encode(ClearCancel(request_id=request_id)), message_id="c1",
                      headers=token(settings))
    await events.wait_for(lambda e: e["event"] == "clear.cancelled" and e["accepted"])
    gate.set()
    [finished] = await events.wait_for(lambda e: e["event"] == "clear.finished" and e["request_id"] == request_id)
    outcomes = {r["device_id"]: r["outcome"] for r in finished["results"]}
    assert set(outcomes.values()) == {"skipped"}, outcomes  # reported, but cancelled before any write-back
    for device_id in outcomes:
        assert show_device(settings, device_id)["writebacks"] == []


async def test_scheduler_opens_the_window_once_and_retries_only_transient_failures(
        database: Database, running: tuple[MemoryBus, Settings, Events]) -> None:
    bus = running[0]
    from datetime import datetime

    config = CoordinatorConfig(retry_every=900)
    runner = Runner(bus, database, Ports(rpc=None), config)  # type: ignore[arg-type]
    runner.poke = lambda: None  # type: ignore[method-assign]
    clock = Clock(datetime.fromisoformat(CLOCK))
    scheduler = Scheduler(database, runner, clock, config)
    assert await scheduler.tick() == ["sched-2026-10-r0"]
    assert await scheduler.tick() == []  # replicas and repeated ticks never double-schedule
    rows = await database.fetch("SELECT count(*) AS n FROM device_clears d JOIN clear_requests r USING (request_id)"
                                " WHERE r.fleet_id = 'sched-2026-10-r0'")
    assert rows[0]["n"] == 6
