"""The scheduler over emulated weeks (the product's injectable clock, no real waiting).

A device that stays busy (another program holds it) from the 1st to past its lock date: the
scheduler opens the window after 00:05 on the 1st, retries every 15 minutes, never after the
lock date, and escalates twice (warning, then critical) at the thresholds that also colour the
console, each alarm reaching the branch's webhook once. The real gateway, emulator, outbox relay
and notify service run; the test advances the clock in 7.5-minute steps and drives each round's
device clears through the real runner.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import trio

from clearcard.runtime import identified, start_services
from device_gateway.emulator.admin import hold
from services.coordinator import leases
from services.coordinator.clock import Clock
from services.coordinator.config import CoordinatorConfig
from services.coordinator.outbox import Relay
from services.coordinator.ports import Ports, RetryPolicy
from services.coordinator.runner import Runner
from services.coordinator.scheduler import Scheduler
from services.notify import store
from shared.bus.memory import MemoryBus
from shared.bus.rpc import RpcClient
from shared.bus.topology import COMMANDS, gateway_routing_key
from shared.china_time import CHINA
from shared.config import Settings
from shared.db import Database
from shared.fleet_status import device_status
from shared.messages.device import DeviceCommand, DeviceInfo
from tests.notify.test_notify import free_port
from tests.support.fleets import fleet_text, one_device

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
DEVICE = "661500000001"
BRANCH = "wuhan-hankou"
START = datetime(2026, 11, 1, 0, 0, tzinfo=CHINA)
STEP = 450.0  # seconds of emulated time between two looks at the calendar: half the retry period


@contextmanager
def webhook_receiver(send: trio.MemorySendChannel[dict[str, Any]]) -> Iterator[str]:
    """A local HTTP endpoint handing each POSTed lock warning to trio as it arrives."""
    token = trio.lowlevel.current_trio_token()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            if body["kind"] == "device.lock_warning":
                token.run_sync_soon(send.send_nowait, body)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    port = free_port()
    server = HTTPServer(("127.0.0.1", port), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(300)  # ~1 minute on 2 cores: 3,000 looks at the calendar and 1,500 device clears
async def test_retries_every_15_minutes_escalates_twice_and_stops_at_the_lock_date(
        tmp_path: Path, database: Database) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(fleet_text(one_device(DEVICE), clock=START.isoformat()), encoding="utf-8")
    settings = Settings.from_env({"CLEARCARD_DATA_DIR": str(tmp_path / "data"), "CLEARCARD_FLEET": str(fleet),
                                  "CLEARCARD_TAX_CALENDAR": "cn-2026"})  # 2026-10 is due on 16 November
    lock_date = settings.calendar.lock_date("2026-10")
    assert lock_date.isoformat() == "2026-11-16"
    bus = MemoryBus()
    coordinator = identified(bus, "coordinator", settings)
    now = [0.0]
    clock = Clock(START, source=lambda: now[0])
    config = CoordinatorConfig(scheduler=1, retry_every=900, retry_attempts=1)
    send, alarms = trio.open_memory_channel[dict[str, Any]](10)
    with webhook_receiver(send) as url:
        await database.run(store.set_contacts, BRANCH, [("webhook", url)])
        async with trio.open_nursery() as nursery, RpcClient.open(coordinator, "coordinator") as rpc:
            await start_services(nursery, ["gateway", "notify"], bus, database, settings)
            info = await rpc.call(COMMANDS, gateway_routing_key("default", "info"), DeviceCommand(device_id=DEVICE),
                                  DeviceInfo)
            assert info.monitoring.lock_date == "2026-11-16"  # the emulator takes the same calendar
            hold(settings, DEVICE)  # the invoicing software holds the device: every clear finds it busy
            relay = Relay(coordinator, database)
            await nursery.start(relay.run)
            runner = Runner(coordinator, database, Ports(rpc, retry=RetryPolicy(attempts=1)), config,
                            on_staged=relay.wake)
            scheduler = Scheduler(database, runner, clock, config, thresholds=settings.thresholds,
                                  on_staged=relay.wake)
            rounds: list[datetime] = []
            colours: dict[str, str] = {}
            end = datetime.combine(lock_date + timedelta(days=1), datetime.min.time(), CHINA) + timedelta(hours=6)
            while clock.now() < end:
                if await scheduler.tick():
                    rounds.append(clock.now())
                    for work in await database.run(leases.claim_work, runner.owner, 10, config.lease_seconds):
                        await runner.drive(work)  # DEVICE_BUSY: a transient failure, retried next round
                today = clock.now().date()
                if today.isoformat() not in colours:
                    [row] = await database.run(device_status, today, settings.thresholds)
                    colours[today.isoformat()] = row["risk"]
                now[0] += STEP
            with trio.fail_after(30):  # both staged alarms reach the webhook through relay and notify
                warnings = [await alarms.receive(), await alarms.receive()]
            nursery.cancel_scope.cancel()

    assert rounds[0] == START + timedelta(seconds=STEP)  # the first look after 00:05 on the 1st
    gaps = {b - a for a, b in itertools.pairwise(rounds)}
    assert gaps == {timedelta(minutes=15)}, gaps  # a retry every 15 minutes, never sooner or later
    assert rounds[-1].date() == lock_date and all(r.date() <= lock_date for r in rounds)  # none after it
    assert len(rounds) == 16 * 24 * 4
    outcomes = await database.fetch("SELECT DISTINCT error_code FROM device_clears")
    assert [r["error_code"] for r in outcomes] == ["DEVICE_BUSY"]
    assert sorted((w["level"], w["days_left"]) for w in warnings) == [("critical", 2), ("warning", 5)]
    # staged once each over thousands of looks (stable ids), so each was sent once
    staged = await database.fetch("SELECT message_id FROM outbox WHERE message_id LIKE 'event:lockwarn:%'")
    assert sorted(r["message_id"] for r in staged) == [f"event:lockwarn:{DEVICE}:2026-11-16:critical",
                                                      f"event:lockwarn:{DEVICE}:2026-11-16:warning"]
    sent = await database.fetch("SELECT dedupe_key FROM notifications_sent WHERE dedupe_key LIKE 'lock:%'")
    assert len(sent) == 2
    # the console's colours change on the same days as the alarms (one set of thresholds)
    assert colours["2026-11-10"] == "green" and colours["2026-11-11"] == "amber"
    assert colours["2026-11-13"] == "amber" and colours["2026-11-14"] == "red"
