"""The emulated devices through pyusb's real code path, the reference drivers and persistence."""

from __future__ import annotations

import errno
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import usb.core
import usb.util
from gateway_helpers import TAXPAYER_A, device_toml, fleet_toml, sealed_package

from device_gateway.drivers import (
    ENTRY_POINT_GROUP,
    TaxControlDiskDriver,
    UKeyDriver,
    load_drivers,
    present_devices,
)
from device_gateway.drivers.errors import usb_error
from device_gateway.emulator import EmulatedBackend, EmulatorStore
from device_gateway.protocol import Command, encode_message
from device_gateway.protocol.usb_ids import PRODUCT_IDS, VENDOR_ID
from shared.errors import ClearCardError, ErrorCode
from shared.fleet import parse_fleet
from shared.messages.device import WritebackPackage

UKEY, DISK = "661500000001", "661500000002"


def backend_for(tmp_path: Path, *extra: str, **fields: Any) -> EmulatedBackend:
    fleet = parse_fleet(fleet_toml(device_toml(UKEY, **fields),
                                   device_toml(DISK, family="tax_control_disk"), *extra))
    store = EmulatorStore(tmp_path / "emulator")
    states = store.seed(fleet, datetime.now(UTC))
    return EmulatedBackend(store, [states[d.id] for d in fleet.devices])


def test_pyusb_finds_devices_with_descriptors_and_strings(tmp_path: Path) -> None:
    backend = backend_for(tmp_path)
    devices = list(usb.core.find(find_all=True, backend=backend))
    assert [(d.idVendor, d.idProduct) for d in devices] == [
        (VENDOR_ID, PRODUCT_IDS["ukey"]), (VENDOR_ID, PRODUCT_IDS["tax_control_disk"])]
    dev = devices[0]
    assert usb.util.get_string(dev, dev.iSerialNumber) == UKEY
    assert "emulated" in dev.product
    dev.set_configuration()
    interface = dev.get_active_configuration()[(0, 0)]
    assert interface.bInterfaceClass == 0xFF and len(list(interface)) == 2
    dev.write(0x01, encode_message(7, Command.INFO, b"{}"))
    reply = bytes(dev.read(0x81, 16384, 1000))
    assert reply.startswith(b"CCDP") and UKEY.encode() in reply
    usb.util.dispose_resources(dev)


def test_unplug_removes_from_enumeration_and_fails_transfers(tmp_path: Path) -> None:
    backend = backend_for(tmp_path)
    dev = usb.core.find(backend=backend, idProduct=PRODUCT_IDS["ukey"])
    dev.set_configuration()
    backend.store.set_plugged(UKEY, False)
    assert [d.idProduct for d in usb.core.find(find_all=True, backend=backend)] == [PRODUCT_IDS["tax_control_disk"]]
    with pytest.raises(usb.core.USBError) as caught:
        dev.write(0x01, b"x")
    assert caught.value.errno == errno.ENODEV and caught.value.backend_error_code == -4
    backend.store.set_plugged(UKEY, True)
    assert len(list(usb.core.find(find_all=True, backend=backend))) == 2


def test_driver_round_trip_and_error_mapping(tmp_path: Path) -> None:
    backend = backend_for(tmp_path, pin="11112222")
    driver = UKeyDriver(backend, UKEY)
    driver.open()
    status = driver.info()
    assert status.info.device_id == UKEY and status.info.types == {"004": 0, "007": 0}
    with pytest.raises(ClearCardError) as caught:
        driver.verify_pin("99999999")
    assert caught.value.code is ErrorCode.DEVICE_PIN_INVALID and "99999999" not in caught.value.message
    assert driver.verify_pin("11112222") == 4
    header = driver.read_period("2026-10", [])
    assert header.invoice_counts == {"004": 5, "007": 5}
    page = driver.read_invoices("2026-10", "007", None, 3)
    assert [i.invoice_type for i in page.invoices] == ["007"] * 3 and page.next_cursor == "3"
    rest = driver.read_invoices("2026-10", "007", page.next_cursor, 3)
    assert len(rest.invoices) == 2 and rest.next_cursor is None
    with pytest.raises(ClearCardError) as caught:
        driver.report("2026-11", [])
    assert caught.value.code is ErrorCode.NOT_IN_REPORTING_WINDOW
    driver.close()


def test_second_claim_is_busy(tmp_path: Path) -> None:
    backend = backend_for(tmp_path)
    first, second = UKeyDriver(backend, UKEY), UKeyDriver(backend, UKEY)
    first.open()
    with pytest.raises(ClearCardError) as caught:
        second.open()
    assert caught.value.code is ErrorCode.DEVICE_BUSY
    first.close()
    second.open()
    second.close()


def test_absent_device_is_offline(tmp_path: Path) -> None:
    backend = backend_for(tmp_path)
    backend.store.set_plugged(UKEY, False)
    with pytest.raises(ClearCardError) as caught:
        UKeyDriver(backend, UKEY).open()
    assert caught.value.code is ErrorCode.DEVICE_OFFLINE
    assert present_devices(backend, load_drivers([])) == {DISK: "tax_control_disk"}


def test_slow_device_times_out_then_the_stale_reply_is_ignored(tmp_path: Path) -> None:
    import time

    backend = backend_for(tmp_path, latency_ms=150)
    driver = UKeyDriver(backend, UKEY)
    driver.open()
    driver.set_deadline(time.monotonic() + 0.05)
    with pytest.raises(ClearCardError) as caught:
        driver.verify_pin("12345678")  # never retried
    assert caught.value.code is ErrorCode.TIMEOUT
    driver.set_deadline(time.monotonic() + 5)
    assert driver.info().info.device_id == UKEY  # the late VERIFY_PIN answer was skipped
    driver.close()


def test_tax_control_disk_driver_writes_the_clock_block_first(tmp_path: Path) -> None:
    backend = backend_for(tmp_path)
    driver = TaxControlDiskDriver(backend, DISK)
    driver.open()
    driver.report("2026-10", [])
    challenge = driver.challenge().challenge
    package = WritebackPackage.model_validate(sealed_package(
        DISK, TAXPAYER_A, period="2026-10", invoice_types=["004", "007"], challenge=challenge,
        clock_block="2026-11-03T09:01:00+08:00"))
    reply = driver.writeback(package)
    assert reply.applied == ["004", "007"] and reply.lock_date == "2026-12-15"
    without = package.model_copy(update={"clock_block": None})
    with pytest.raises(ClearCardError) as caught:
        driver.writeback(without)
    assert caught.value.code is ErrorCode.WRITEBACK_REJECTED
    driver.close()


def test_state_survives_a_restart_and_the_fleet_only_seeds_new_devices(tmp_path: Path) -> None:
    backend = backend_for(tmp_path)
    driver = UKeyDriver(backend, UKEY)
    driver.open()
    driver.report("2026-10", ["004"])
    driver.close()
    # restart with a fleet that would seed the device differently: the saved state wins
    restarted = backend_for(tmp_path, pin_tries_left=1, invoice_types=["026"])
    state = restarted.state_of(UKEY)
    assert state.pin_tries_left == 5 and state.types["004"].status == 1
    assert [r.invoice_type for r in state.reports] == ["004"]
    assert not list((tmp_path / "emulator").glob("*.tmp"))


def test_usb_error_mapping() -> None:
    def err(code: int, number: int) -> ClearCardError:
        return usb_error(usb.core.USBError("x", code, number), UKEY)

    assert err(-4, errno.ENODEV).code is ErrorCode.DEVICE_OFFLINE
    assert err(-6, errno.EBUSY).code is ErrorCode.DEVICE_BUSY
    assert err(-9, errno.EPIPE).code is ErrorCode.DEVICE_BUSY
    assert usb_error(usb.core.USBTimeoutError("t", -7, errno.ETIMEDOUT), UKEY).code is ErrorCode.TIMEOUT


class _FakeEntryPoint:
    def __init__(self, name: str, target: Any) -> None:
        self.name, self._target = name, target

    def load(self) -> Any:
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


def test_vendor_drivers_load_from_entry_points() -> None:
    class VendorUKey(UKeyDriver):
        product_id = 0x4242

    plugins: list[Any] = [_FakeEntryPoint("vendor", VendorUKey),
                          _FakeEntryPoint("broken", ImportError("no such module"))]
    drivers = load_drivers(plugins)
    assert drivers["ukey"] is VendorUKey
    assert drivers["tax_control_disk"] is TaxControlDiskDriver
    assert ENTRY_POINT_GROUP == "clearcard.device_drivers"


def test_a_replica_sharing_the_data_dir_reloads_state_saved_by_another(tmp_path: Path) -> None:
    # two gateway replicas (or a replica and an emulated cabinet) load the same state files
    first, second = backend_for(tmp_path), backend_for(tmp_path)
    a, b = UKeyDriver(first, UKEY), UKeyDriver(second, UKEY)
    a.open()
    b.open()
    assert b.info().info.types == {"004": 0, "007": 0}  # loads nothing new: unchanged on disk
    a.report("2026-10", [])
    assert second.state_of(UKEY).types["004"].status == 0  # stale until its next command ...
    assert b.info().info.types == {"004": 1, "007": 1}  # ... which reloads it first
    challenge = b.challenge().challenge  # saved by the second replica
    package = WritebackPackage.model_validate(sealed_package(
        UKEY, TAXPAYER_A, period="2026-10", invoice_types=["004", "007"], challenge=challenge))
    assert a.writeback(package).applied == ["004", "007"]  # the first sees the second's challenge
    assert b.info().info.types == {"004": 2, "007": 2}
    # the package again through the second: a stale copy (its own challenge outstanding, types
    # in 1) would apply it a second time; the reloaded one knows it was applied
    again = b.writeback(package)
    assert again.applied == [] and again.already == ["004", "007"]
    assert len(second.state_of(UKEY).writebacks) == 2
    a.close()
    b.close()


def test_a_damaged_state_file_on_disk_keeps_the_loaded_copy(tmp_path: Path) -> None:
    backend = backend_for(tmp_path)
    driver = UKeyDriver(backend, UKEY)
    driver.open()
    driver.report("2026-10", ["004"])
    (tmp_path / "emulator" / f"{UKEY}.json").write_text("{not json", encoding="utf-8")
    assert driver.info().info.types == {"004": 1, "007": 0}
    driver.close()


def test_a_scan_reads_each_serial_once_per_plug_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = backend_for(tmp_path)
    reads: list[int] = []
    real_get_string = usb.util.get_string

    def counted(dev: Any, index: int, *args: Any) -> str:
        reads.append(dev.address)
        return real_get_string(dev, index, *args)

    monkeypatch.setattr(usb.util, "get_string", counted)
    everything = {UKEY: "ukey", DISK: "tax_control_disk"}
    assert present_devices(backend, load_drivers([])) == everything
    assert len(reads) == 2
    assert present_devices(backend, load_drivers([])) == everything
    assert len(reads) == 2  # the same devices where they were: no control transfer to either
    backend.store.set_plugged(UKEY, False)
    assert present_devices(backend, load_drivers([])) == {DISK: "tax_control_disk"}
    backend.store.set_plugged(UKEY, True)
    assert present_devices(backend, load_drivers([])) == everything
    assert len(reads) == 3  # plugged in again: its serial is read again, the disk's is not
    driver = UKeyDriver(backend, UKEY)  # the device the scan remembered opens (it raises if not)
    driver.open()
    driver.close()
