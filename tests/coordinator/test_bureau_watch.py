"""The bureau watch at fleet size, and abandoned devices (real PostgreSQL, in-memory bus)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
import trio

from clearcard.runtime import identified, start_services
from services.coordinator.bureau_watch import BureauWatch
from services.coordinator.clock import Clock
from services.coordinator.config import CoordinatorConfig
from services.coordinator.ports import Ports
from services.coordinator.runner import Runner
from services.coordinator.scheduler import Scheduler
from services.notify.service import Notifier, smtp_from_env
from shared.bus.memory import MemoryBus
from shared.bus.rpc import RpcClient
from shared.china_time import CHINA
from shared.config import Settings
from shared.db import Database
from shared.fleet_status import device_status
from tests.support.fleets import fleet_text, one_device

pytestmark = pytest.mark.postgres
NOW = datetime(2026, 11, 3, 9, 0, tzinfo=CHINA)


class CountingBus(MemoryBus):
    """The in-memory bus, counting what is published per routing key."""

    def __init__(self) -> None:
        super().__init__()
        self.published: dict[str, int] = {}

    async def publish(self, exchange: str, routing_key: str, body: bytes, *, message_id: str | None = None,
                      correlation_id: str | None = None, reply_to: str | None = None,
                      headers: Mapping[str, Any] | None = None) -> None:
        self.published[routing_key] = self.published.get(routing_key, 0) + 1
        await super().publish(exchange, routing_key, body, message_id=message_id, correlation_id=correlation_id,
                              reply_to=reply_to, headers=headers)


async def _register(database: Database, rows: list[tuple[str, str, str]]) -> None:
    await database.run(lambda conn: conn.executemany(
        "INSERT INTO devices (device_id, family, taxpayer_id, branch_id, gateway_id, open_period, lock_date)"
        " VALUES ($1, 'ukey', '91420100MA4K0001XK', 'wuhan-hankou', 'default', $2, $3)",
        [(d, p, date.fromisoformat(lock)) for d, p, lock in rows]))


async def test_the_view_of_a_large_fleet_is_refreshed_in_batches_and_only_when_due(
        tmp_path: Path, database: Database) -> None:
    ids = [f"66150{n:07d}" for n in range(450)]
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(fleet_text(*(one_device(d, declared=(n % 3 != 0)) for n, d in enumerate(ids))), encoding="utf-8")
    settings = Settings.from_env({"CLEARCARD_DATA_DIR": str(tmp_path / "data"), "CLEARCARD_FLEET": str(fleet)})
    await _register(database, [(d, "2026-10", "2026-11-15") for d in ids])
    bus = CountingBus()
    async with trio.open_nursery() as nursery:
        await start_services(nursery, ["authority-sim"], bus, database, settings)
        async with RpcClient.open(identified(bus, "coordinator", settings), "coordinator") as rpc:
            watch = BureauWatch(database, Ports(rpc), Clock(NOW), CoordinatorConfig())
            assert await watch.tick() is None
            assert bus.published["authority.declaration_statuses"] == 3  # 200 devices per message
            await watch.tick()  # just asked: nothing is due before the refresh interval
            assert bus.published["authority.declaration_statuses"] == 3
        nursery.cancel_scope.cancel()
    rows = await database.run(device_status, NOW.date(), settings.thresholds)
    seen = {(r["filing"], r["comparison"]) for r in rows}
    assert len(rows) == 450 and seen == {("filed", "pending"), ("not_filed", "pending")}  # nothing reported yet
    assert sum(r["filing"] == "not_filed" for r in rows) == 150


async def test_an_abandoned_device_gets_its_own_status_and_one_warning(tmp_path: Path, database: Database) -> None:
    await _register(database, [("661500000009", "2026-06", "2026-07-15"), ("661500000010", "2026-10", "2026-11-15")])
    config = CoordinatorConfig(scheduler=1)
    bus = MemoryBus()
    runner = Runner(bus, database, Ports(rpc=None), config)  # type: ignore[arg-type]  # nothing to drive here
    runner.poke = lambda: None  # type: ignore[method-assign]
    scheduler = Scheduler(database, runner, Clock(NOW), config)
    for _ in range(2):
        await scheduler.tick()
    staged = await database.fetch("SELECT message_id, body FROM outbox WHERE message_id LIKE 'event:abandoned:%'")
    assert [r["message_id"] for r in staged] == ["event:abandoned:661500000009:2026-06-01"]
    event = json.loads(bytes(staged[0]["body"]))
    assert event["event"] == "device.abandoned" and event["days_since"] == 155
    rows = {r["device_id"]: r for r in await database.run(device_status, NOW.date(), Settings.from_env({}).thresholds)}
    assert rows["661500000009"]["abandoned"] and rows["661500000009"]["risk"] == "abandoned"
    assert not rows["661500000010"]["abandoned"] and rows["661500000010"]["risk"] == "green"
    [notice] = await Notifier(database, smtp_from_env({})).notices(event)
    assert notice.payload["kind"] == "device.abandoned" and "abandoned" in notice.subject
