"""Which driver serves which family: the built-in reference drivers plus entry-point plug-ins.

A vendor package registers `[project.entry-points."clearcard.device_drivers"]` naming a class
with `family`, `vendor_id`, `product_id` and the DeviceDriver methods; it replaces the
reference driver of that family. A plug-in that fails to load is logged and skipped.
"""

from __future__ import annotations

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
            int(driver.vendor_id), int(driver.product_id)
        except Exception as exc:  # a broken plug-in must not keep the gateway down
            log.error("device driver plug-in not loaded", entry_point=plugin.name, error=repr(exc))
            continue
        drivers[family] = driver
    return drivers


def present_devices(backend: Any, drivers: Mapping[str, type[DeviceDriver]]) -> dict[str, str]:
    """Serial (device id) -> family of every connected device some driver knows."""
    ids = {(d.vendor_id, d.product_id): family for family, d in drivers.items()}
    found: dict[str, str] = {}
    with usb_errors("enumeration"):
        for dev in usb.core.find(find_all=True, backend=backend,
                                 custom_match=lambda d: (d.idVendor, d.idProduct) in ids):
            try:
                serial = usb.util.get_string(dev, dev.iSerialNumber)
            except (usb.core.USBError, ValueError):
                continue  # unplugged between enumeration and the string request
            finally:
                usb.util.dispose_resources(dev)
            if serial:
                found[serial] = ids[(dev.idVendor, dev.idProduct)]
                locate.remember(backend, serial, dev)
    return found
