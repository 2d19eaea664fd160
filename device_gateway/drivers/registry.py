"""Which driver serves which family, and which USB ids are whose: the one place for both.

The built-in reference drivers come first; a vendor package registers
`[project.entry-points."clearcard.device_drivers"]` naming a class with `family`, its USB ids
and the DeviceDriver methods, and it replaces the reference driver of that family. A driver
declares its ids as `usb_ids` (every `(vendor id, product id)` pair its devices use; a family
made by several manufacturers has several) or as one `vendor_id` / `product_id` pair. The
gateway finds hardware on every bus (emulated, USB/IP, the host's libusb) by these ids alone;
a device whose ids no driver claims is not a tax device and is ignored. A plug-in that fails
to load is logged and skipped. docs/device-protocol.md, "Drivers and USB ids".
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import structlog
import usb.core
import usb.util

from device_gateway.drivers import locate
from device_gateway.drivers.base import DeviceDriver
from device_gateway.drivers.errors import usb_errors
from device_gateway.drivers.reference import GoldenTaxDiskDriver, TaxControlDiskDriver, UKeyDriver

log = structlog.get_logger("clearcard.gateway")

ENTRY_POINT_GROUP = "clearcard.device_drivers"
LIBUSB_ACCESS = -3  # LIBUSB_ERROR_ACCESS: the process may not open the device node
_WARNED_MAX = 1024
_warned: set[tuple[int, int, int, int]] = set()  # devices already reported unreadable
BUILTIN: dict[str, type[DeviceDriver]] = {
    d.family: d for d in (UKeyDriver, GoldenTaxDiskDriver, TaxControlDiskDriver)
}


def load_drivers(plugins: Iterable[EntryPoint] | None = None) -> dict[str, type[DeviceDriver]]:
    """Family -> driver class: built-ins, overridden or extended by `clearcard.device_drivers`."""
    drivers = dict(BUILTIN)
    found = entry_points(group=ENTRY_POINT_GROUP) if plugins is None else plugins
    for plugin in found:
        try:
            driver = plugin.load()
            family = driver.family
            if not isinstance(family, str) or not family:
                raise TypeError("driver class has no `family`")
            if not usb_ids(driver):
                raise TypeError("driver class declares no USB ids")
        except Exception as exc:  # a broken plug-in must not keep the gateway down
            log.error("device driver plug-in not loaded", entry_point=plugin.name, error=repr(exc))
            continue
        drivers[family] = driver
    return drivers


def usb_ids(driver: type[DeviceDriver]) -> tuple[tuple[int, int], ...]:
    """Every (vendor id, product id) the driver's devices use: `usb_ids`, else its one pair."""
    declared = getattr(driver, "usb_ids", None)
    if declared:
        return tuple((int(vendor), int(product)) for vendor, product in declared)
    return ((int(driver.vendor_id), int(driver.product_id)),)


def families_by_usb_id(drivers: Mapping[str, type[DeviceDriver]]) -> dict[tuple[int, int], str]:
    """(vendor id, product id) -> family, over every driver."""
    return {pair: family for family, driver in drivers.items() for pair in usb_ids(driver)}


def _where(dev: Any) -> locate.Place | None:
    """Where a device sits while it stays plugged in: (bus, address, vendor id, product id).

    The host gives a device a new address each time it is plugged in, so while a device keeps
    its bus and address it is the same device, and its serial need not be read again."""
    bus, address = getattr(dev, "bus", None), getattr(dev, "address", None)
    return None if bus is None or address is None else (bus, address, dev.idVendor, dev.idProduct)


def _read_serial(dev: Any) -> str | None:
    """The device's serial string (two control transfers), or None if it cannot be read now."""
    try:
        return str(usb.util.get_string(dev, dev.iSerialNumber) or "") or None
    except usb.core.USBError as exc:
        if exc.errno == errno.EACCES or getattr(exc, "backend_error_code", None) == LIBUSB_ACCESS:
            _unreadable(dev)
        return None  # unplugged between enumeration and the string request
    except ValueError:
        return None
    finally:
        usb.util.dispose_resources(dev)


def present_devices(backend: Any, drivers: Mapping[str, type[DeviceDriver]]) -> dict[str, str]:
    """Serial (device id) -> family of every connected device some driver knows.

    The hot-plug watch calls this every few seconds. Reading a serial costs two control
    transfers, which on a cabinet of hundreds of devices (or emulated, in Python) made every scan
    a pass over the whole bus: a serial is read once per device and plug-in, where it sits."""
    ids = families_by_usb_id(drivers)
    known = locate.serials_by_place(backend)
    found: dict[str, str] = {}
    still: dict[locate.Place, str] = {}
    with usb_errors("enumeration"):
        for dev in usb.core.find(find_all=True, backend=backend,
                                 custom_match=lambda d: (d.idVendor, d.idProduct) in ids):
            where = _where(dev)
            serial = (known.get(where) if where is not None else None) or _read_serial(dev)
            if serial:
                found[serial] = ids[(dev.idVendor, dev.idProduct)]
                locate.remember(backend, serial, dev)
                if where is not None:
                    still[where] = serial
    # a device gone from its place is forgotten: plugged in again, its serial is read again
    locate.keep_serials(backend, still)
    return found


def _unreadable(dev: Any) -> None:
    """Say once per device that its serial cannot be read: on Linux a udev rule is missing."""
    key = (dev.idVendor, dev.idProduct, getattr(dev, "bus", 0) or 0, getattr(dev, "address", 0) or 0)
    if key in _warned or len(_warned) >= _WARNED_MAX:
        return
    _warned.add(key)
    log.warning("tax device found but not readable: permission denied (on Linux add a udev rule giving "
                "the gateway's user access; docs/device-protocol.md)", vendor_id=f"{key[0]:04x}",
                product_id=f"{key[1]:04x}", bus=key[2], address=key[3])
