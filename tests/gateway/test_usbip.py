"""USB over the network: emulated devices exported by a USB/IP server on loopback, reached
through the USB/IP pyusb backend by the same family drivers, and by the gateway service."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
import usb.core
import usb.util
from gateway_helpers import TAXPAYER_A, device_toml, fleet_toml, sealed_package, settings_for

from device_gateway.config import GatewayEnv
from device_gateway.drivers import TaxControlDiskDriver, UKeyDriver, load_drivers, present_devices
from device_gateway.emulator import EmulatedBackend, EmulatorStore
from device_gateway.protocol import Command, encode_message
from device_gateway.protocol.usb_ids import EP_IN, EP_OUT, PRODUCT_IDS, VENDOR_ID
from device_gateway.transports import parse_servers
from shared.bus.memory import MemoryBus
from shared.bus.rpc import RpcClient
from shared.bus.topology import COMMANDS, gateway_routing_key
from shared.db import Database
from shared.errors import ClearCardError, ErrorCode
from shared.fleet import parse_fleet
from shared.messages.device import DeviceCommand, DeviceInfo, WritebackPackage

try:
    from device_gateway.emulator.usbip_server import UsbipServer
    from device_gateway.transports.usbip import UsbipBackend
except ImportError as exc:  # the `usbip` package is missing
    from conftest import missing

    missing(f"the usbip package ({exc})", ".venv/bin/python -m pip install usbip")

UKEY, DISK = "661500000001", "661500000002"


def emulated(data_dir: Path, **fields: Any) -> EmulatedBackend:
    """The emulated devices a cabinet holds: a ukey and a tax control disk."""
    fleet = parse_fleet(fleet_toml(device_toml(UKEY, **fields), device_toml(DISK, family="tax_control_disk")))
    store = EmulatorStore(data_dir / "emulator")
    states = store.seed(fleet, datetime.now(UTC))
    return EmulatedBackend(store, [states[d.id] for d in fleet.devices])


@pytest.fixture
def cabinet(tmp_path: Path) -> Iterator[UsbipServer]:
    with UsbipServer(emulated(tmp_path / "cabinet")) as server:
        yield server


@pytest.fixture
def remote(cabinet: UsbipServer) -> Iterator[UsbipBackend]:
    backend = UsbipBackend([cabinet.address], connect_timeout=5)
    yield backend
    backend.close()


def test_pyusb_finds_the_exported_device_and_reads_its_serial(remote: UsbipBackend) -> None:
    dev = usb.core.find(backend=remote, idVendor=VENDOR_ID, idProduct=PRODUCT_IDS["ukey"])
    assert dev is not None
    assert usb.util.get_string(dev, dev.iSerialNumber) == UKEY
    assert "emulated" in dev.product and dev.manufacturer == "ClearCard emulator"
    assert dev.bus > 1000 and dev.speed == usb.util.SPEED_HIGH
    dev.set_configuration()
    usb.util.claim_interface(dev, 0)
    interface = dev.get_active_configuration()[(0, 0)]
    assert interface.bInterfaceClass == 0xFF
    assert [(e.bEndpointAddress, e.wMaxPacketSize) for e in interface] == [(EP_OUT, 512), (EP_IN, 512)]
    dev.write(EP_OUT, encode_message(7, Command.INFO, b"{}"), 2000)
    reply = bytes(dev.read(EP_IN, 16384, 2000))
    assert reply.startswith(b"CCDP") and UKEY.encode() in reply
    usb.util.dispose_resources(dev)
    assert present_devices(remote, load_drivers([])) == {UKEY: "ukey", DISK: "tax_control_disk"}


def test_a_full_sequence_through_the_family_drivers(cabinet: UsbipServer, remote: UsbipBackend) -> None:
    driver = UKeyDriver(remote, UKEY)
    driver.open()
    status = driver.info()
    assert status.info.device_id == UKEY and status.info.types == {"004": 0, "007": 0}
    assert driver.verify_pin("12345678") == 5
    report = driver.report("2026-10", [])
    assert {s.invoice_type for s in report.summaries} == {"004", "007"}
    challenge = driver.challenge().challenge
    package = WritebackPackage.model_validate(sealed_package(
        UKEY, TAXPAYER_A, period="2026-10", invoice_types=["004", "007"], challenge=challenge))
    reply = driver.writeback(package)
    assert reply.applied == ["004", "007"] and reply.lock_date == "2026-12-15"
    assert driver.info().info.types == {"004": 2, "007": 2}
    driver.close()
    # the cabinet's emulator did it (and saved it)
    assert [w.package_id for w in cabinet.backend.state_of(UKEY).writebacks] == [package.package_id] * 2

    disk = TaxControlDiskDriver(remote, DISK)
    disk.open()
    disk.report("2026-10", [])
    package = WritebackPackage.model_validate(sealed_package(
        DISK, TAXPAYER_A, period="2026-10", invoice_types=["004", "007"], challenge=disk.challenge().challenge,
        clock_block="2026-11-03T09:01:00+08:00"))
    assert disk.writeback(package).applied == ["004", "007"]  # WRITE_CLOCK, then WRITEBACK
    disk.close()


def test_a_server_that_goes_away_fails_transfers_with_device_offline(
    cabinet: UsbipServer, remote: UsbipBackend,
) -> None:
    driver = UKeyDriver(remote, UKEY)
    driver.open()
    assert driver.info().info.device_id == UKEY
    cabinet.close()
    with pytest.raises(ClearCardError) as caught:
        driver.info()
    assert caught.value.code is ErrorCode.DEVICE_OFFLINE
    driver.close()
    with pytest.raises(ClearCardError) as caught:
        driver.open()
    assert caught.value.code is ErrorCode.DEVICE_OFFLINE
    assert present_devices(remote, load_drivers([])) == {}


def test_a_stalled_server_hits_the_timeout_and_the_handle_recovers(
    cabinet: UsbipServer, remote: UsbipBackend,
) -> None:
    driver = UKeyDriver(remote, UKEY)
    driver.open()
    with cabinet.frozen():
        driver.set_deadline(time.monotonic() + 0.3)
        started = time.monotonic()
        with pytest.raises(ClearCardError) as caught:
            driver.verify_pin("12345678")  # never retried
        assert caught.value.code is ErrorCode.TIMEOUT
        assert time.monotonic() - started < 5
        with pytest.raises(ClearCardError) as caught:
            driver.info()  # retried within the deadline, which has run out
        assert caught.value.code is ErrorCode.TIMEOUT
    driver.set_deadline(time.monotonic() + 10)
    assert driver.info().info.device_id == UKEY  # imported again on the same handle
    driver.close()


def test_a_slow_device_times_out_and_its_late_answer_is_skipped(tmp_path: Path) -> None:
    with UsbipServer(emulated(tmp_path, latency_ms=150)) as server:
        remote = UsbipBackend([server.address])
        driver = UKeyDriver(remote, UKEY)
        driver.open()
        driver.set_deadline(time.monotonic() + 0.05)
        with pytest.raises(ClearCardError) as caught:
            driver.verify_pin("12345678")
        assert caught.value.code is ErrorCode.TIMEOUT
        driver.set_deadline(time.monotonic() + 10)
        assert driver.info().info.device_id == UKEY
        driver.close()
        remote.close()


def test_import_is_exclusive_and_held_or_unplugged_devices_are_refused(
    cabinet: UsbipServer, remote: UsbipBackend,
) -> None:
    first = UKeyDriver(remote, UKEY)
    first.open()
    other_host = UsbipBackend([cabinet.address], connect_timeout=5)
    with pytest.raises(ClearCardError) as caught:
        UKeyDriver(other_host, UKEY).open()  # its descriptors were never read: not found, or busy
    assert caught.value.code in (ErrorCode.DEVICE_BUSY, ErrorCode.DEVICE_OFFLINE)
    first.close()
    second = UKeyDriver(other_host, UKEY)
    second.open()  # freed when the first host's last handle closed
    second.close()
    other_host.close()

    store = cabinet.backend.store
    store.set_held(UKEY, True)  # the invoicing software on the cabinet's side has it
    with pytest.raises(ClearCardError) as caught:
        UKeyDriver(remote, UKEY).open()
    assert caught.value.code is ErrorCode.DEVICE_BUSY
    store.set_held(UKEY, False)

    driver = UKeyDriver(remote, UKEY)
    driver.open()
    store.set_plugged(UKEY, False)
    with pytest.raises(ClearCardError) as caught:
        driver.info()
    assert caught.value.code is ErrorCode.DEVICE_OFFLINE
    driver.close()
    assert present_devices(remote, load_drivers([])) == {DISK: "tax_control_disk"}
    store.set_plugged(UKEY, True)
    assert set(present_devices(remote, load_drivers([]))) == {UKEY, DISK}


def test_server_list_parsing_and_gateway_environment() -> None:
    assert parse_servers("10.0.0.5:3240, cabinet-2 ,[::1]:4000,,10.0.0.5:3240") == [
        ("10.0.0.5", 3240), ("cabinet-2", 3240), ("::1", 4000)]
    assert parse_servers(None) == [] and parse_servers(" ") == []
    for bad in ("host:", "host:0", "host:x", ":3240", "::1:3240", "[::1"):
        with pytest.raises(ValueError):
            parse_servers(bad)
    env = GatewayEnv.from_env({"CLEARCARD_USBIP_SERVERS": "127.0.0.1:3241", "CLEARCARD_GATEWAY_SHARDS": "4"})
    assert env == GatewayEnv(usbip_servers=(("127.0.0.1", 3241),), shards=4)
    assert GatewayEnv.from_env({}) == GatewayEnv()
    with pytest.raises(ValueError, match="CLEARCARD_GATEWAY_SHARDS"):
        GatewayEnv.from_env({"CLEARCARD_GATEWAY_SHARDS": "-1"})
    with pytest.raises(ValueError, match="CLEARCARD_USBIP_SERVERS"):
        GatewayEnv.from_env({"CLEARCARD_USBIP_SERVERS": "host:port"})


async def test_the_gateway_serves_cabinet_devices_under_its_configured_id(
    database: Database, tmp_path: Path,
) -> None:
    # the gateway's fleet names the ukey (registry, PIN on record); the device itself is
    # plugged into the cabinet, so the gateway's own emulator has it unplugged
    gateway_dir = tmp_path / "gateway"
    gateway_dir.mkdir()
    base = settings_for(gateway_dir, fleet_toml(device_toml(UKEY)))
    settings = type(base)(**{**base.__dict__, "gateway_id": "cabinet-room"})
    EmulatorStore(settings.emulator_dir).set_plugged(UKEY, False)
    with UsbipServer(emulated(tmp_path / "cabinet", pin_tries_left=4)) as server:
        bus = MemoryBus()
        environ = {"CLEARCARD_USBIP_SERVERS": server.spec}
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: _run(bus, database, settings, environ, task_status))
            async with RpcClient.open(bus, "test") as rpc:
                with trio.fail_after(30):
                    info = await rpc.call(COMMANDS, gateway_routing_key("cabinet-room", "info"),
                                          DeviceCommand(device_id=UKEY), DeviceInfo)
            assert info.device_id == UKEY and info.pin_tries_left == 4  # the cabinet's copy answered
            nursery.cancel_scope.cancel()


async def _run(bus: MemoryBus, database: Database, settings: Any, environ: dict[str, str],
               task_status: trio.TaskStatus[None]) -> None:
    from device_gateway.service import run_gateway

    await run_gateway(bus, database, settings, environ=environ, scan_interval=3600, task_status=task_status)
