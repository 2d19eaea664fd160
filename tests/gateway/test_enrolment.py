"""The gateway drives only enrolled devices in service: unenrolled hardware, retirement, PIN corrections."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
from gateway_helpers import TAXPAYER_A, device_toml, fleet_toml, settings_for
from test_service import Client, expect_error, gateway

from clearcard.commands.device import _ChainAudit
from device_gateway.drivers import load_drivers, present_devices
from device_gateway.emulator import EmulatedBackend, EmulatorStore
from device_gateway.emulator.admin import show_device
from device_gateway.roster import Roster
from device_registry import PinVault, Registry
from device_registry.directory import list_page
from shared.db import Database
from shared.errors import ClearCardError, ErrorCode
from shared.fleet import parse_fleet
from shared.messages.device import DeviceCommand, DeviceInfo, PeriodCommand

KNOWN, NEW, WRONG = "661500000001", "661500000002", "661500000003"
FLEET = fleet_toml(
    device_toml(KNOWN),
    device_toml(NEW, enrolled=False),  # plugged in; the product was not told about it
    device_toml(WRONG, registered_pin="87654321"),  # the PIN on record is wrong
)


def registry(database: Database, tmp_path: Path) -> Registry:
    return Registry(database, PinVault.open(settings_for(tmp_path, None).keys_dir), _ChainAudit(database))


def precheck(device_id: str) -> PeriodCommand:
    return PeriodCommand(device_id=device_id, period="2026-10")


async def test_unenrolled_hardware_is_refused_listed_and_clears_once_enrolled(
        database: Database, tmp_path: Path) -> None:
    async with gateway(database, tmp_path, FLEET) as client:
        refused = await expect_error(ErrorCode.UNKNOWN_DEVICE, client.call("precheck", precheck(NEW), DeviceInfo))
        assert "not enrolled" in refused.message and "clearcard device import" in refused.message
        await expect_error(ErrorCode.UNKNOWN_DEVICE, client.call("info", DeviceCommand(device_id=NEW), DeviceInfo))
        listed = {d["device_id"]: d for d in await database.run(list_page)}
        assert listed[NEW]["enrolled"] is False
        assert (listed[NEW]["gateway_id"], listed[NEW]["family"], listed[NEW]["serial"]) == ("default", "ukey", NEW)
        assert listed[KNOWN]["enrolled"] is True and listed[KNOWN]["pin_on_record"] is True
        assert await database.fetch("SELECT 1 FROM devices WHERE device_id = $1", NEW) == []

        admin = registry(database, tmp_path)
        await admin.import_file([("device_id,family,taxpayer_id,branch,machine_no\n"),
                                 f"{NEW},ukey,{TAXPAYER_A},wuhan-hankou,0\n"], actor="admin", source="import")
        no_pin = await expect_error(ErrorCode.DEVICE_PIN_INVALID, client.call("precheck", precheck(NEW), DeviceInfo))
        assert "No certificate PIN is on record" in no_pin.message and "No try was used" in no_pin.message
        await admin.set_pin(NEW, "12345678", actor="admin")
        info = await client.call("precheck", precheck(NEW), DeviceInfo)  # driven at once, no restart
        assert info.device_id == NEW and info.pin_tries_left == 5
        [row] = await database.fetch("SELECT gateway_id, online, lock_date FROM devices WHERE device_id = $1", NEW)
        assert row["gateway_id"] == "default" and row["online"] and row["lock_date"] is not None


async def test_a_retired_device_is_refused_at_once(database: Database, tmp_path: Path) -> None:
    async with gateway(database, tmp_path, FLEET) as client:
        await client.call("precheck", precheck(KNOWN), DeviceInfo)
        assert await registry(database, tmp_path).retire(KNOWN, actor="admin")
        refused = await expect_error(ErrorCode.UNKNOWN_DEVICE, client.call("precheck", precheck(KNOWN), DeviceInfo))
        assert "retired" in refused.message
    assert show_device(settings_for(tmp_path, None), KNOWN)["pin_tries_left"] == 5


async def test_a_corrected_pin_is_tried_again_and_only_one_try_is_lost(database: Database, tmp_path: Path) -> None:
    async with gateway(database, tmp_path, FLEET) as client:
        first = await expect_error(ErrorCode.DEVICE_PIN_INVALID, client.call("precheck", precheck(WRONG), DeviceInfo))
        again = await expect_error(ErrorCode.DEVICE_PIN_INVALID, client.call("precheck", precheck(WRONG), DeviceInfo))
        assert "no try used" in again.message and "set-pin" in again.message and first.message != again.message
        assert show_device(settings_for(tmp_path, None), WRONG)["pin_tries_left"] == 4
        admin = registry(database, tmp_path)
        await admin.set_pin(WRONG, "87654321", actor="admin")  # the same wrong PIN, recorded again: tried again
        await expect_error(ErrorCode.DEVICE_PIN_INVALID, client.call("precheck", precheck(WRONG), DeviceInfo))
        await admin.set_pin(WRONG, "12345678", actor="admin")
        info = await client.call("precheck", precheck(WRONG), DeviceInfo)
        assert info.pin_tries_left == 3
    [row] = await database.fetch("SELECT pin_refused_revision FROM device_sightings WHERE device_id = $1", WRONG)
    assert row["pin_refused_revision"] is None  # the good PIN cleared the memory


async def test_a_restart_does_not_enrol_a_retired_fleet_device_again(database: Database, tmp_path: Path) -> None:
    async with gateway(database, tmp_path, FLEET):
        await registry(database, tmp_path).retire(KNOWN, actor="admin")
    async with gateway(database, tmp_path, FLEET) as client:
        await expect_error(ErrorCode.UNKNOWN_DEVICE, client.call("info", DeviceCommand(device_id=KNOWN), DeviceInfo))
    assert [r["device_id"] for r in await database.fetch("SELECT device_id FROM devices ORDER BY 1")] == [WRONG]


@asynccontextmanager
async def roster_of(database: Database, tmp_path: Path, text: str) -> AsyncIterator[Roster]:
    fleet = parse_fleet(text)
    store = EmulatorStore(tmp_path / "emulator")
    states = store.seed(fleet, datetime.now(UTC))
    backend = EmulatedBackend(store, [states[d.id] for d in fleet.devices])
    roster = Roster("default", database, load_drivers(), backend, trio.CapacityLimiter(4))
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: roster.run(refresh=math.inf, task_status=task_status))
        found = await trio.to_thread.run_sync(present_devices, backend, load_drivers())
        await roster.observe(found, set())
        yield roster
        nursery.cancel_scope.cancel()


async def test_the_roster_follows_imports_and_retirements(database: Database, tmp_path: Path) -> None:
    admin = registry(database, tmp_path)
    header = "device_id,family,taxpayer_id,branch,machine_no\n"
    await admin.import_file([header, f"{KNOWN},ukey,{TAXPAYER_A},wuhan-hankou,0\n"], actor="a", source="import")
    async with roster_of(database, tmp_path, fleet_toml(device_toml(KNOWN), device_toml(NEW))) as roster:
        assert set(roster.actors) == {KNOWN}  # hardware found; only the enrolled device is driven
        await admin.import_file([header, f"{NEW},ukey,{TAXPAYER_A},wuhan-hankou,0\n"], actor="a", source="import")
        await admin.retire(KNOWN, actor="a")
        await roster.refresh()
        assert set(roster.actors) == {NEW}
        with pytest.raises(ClearCardError) as refused:
            await roster.actor(KNOWN)
        assert refused.value.code is ErrorCode.UNKNOWN_DEVICE and "retired" in refused.value.message
    seen = {r["device_id"]: r["online"] for r in await database.fetch("SELECT * FROM device_sightings")}
    assert seen == {KNOWN: True, NEW: True}


async def test_without_a_fleet_file_the_gateway_runs_on_libusb(database: Database, tmp_path: Path) -> None:
    import usb.backend.libusb1

    from device_gateway.transports.libusb import open_libusb
    from tests.support.servers import missing

    try:
        backend, library = open_libusb()
    except Exception as exc:
        missing(f"libusb-1.0 ({exc})", "apt-get install libusb-1.0-0")
    assert isinstance(backend, usb.backend.libusb1._LibUSB) and "usb-1.0" in library
    assert isinstance(list(backend.enumerate_devices()), list)  # this machine may have no USB at all
    async with gateway(database, tmp_path, None) as client:
        refused = await expect_error(ErrorCode.UNKNOWN_DEVICE,
                                     client.call("info", DeviceCommand(device_id=KNOWN), DeviceInfo))
        assert "no gateway has seen it" in refused.message


__all__ = ["Client"]
