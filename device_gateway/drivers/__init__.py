"""Device drivers: the reference-protocol drivers per family and the plug-in registry."""

from device_gateway.drivers.base import DeviceDriver, DeviceStatus
from device_gateway.drivers.reference import (
    GoldenTaxDiskDriver,
    ReferenceDriver,
    TaxControlDiskDriver,
    UKeyDriver,
)
from device_gateway.drivers.registry import ENTRY_POINT_GROUP, load_drivers, present_devices

__all__ = [
    "ENTRY_POINT_GROUP",
    "DeviceDriver",
    "DeviceStatus",
    "GoldenTaxDiskDriver",
    "ReferenceDriver",
    "TaxControlDiskDriver",
    "UKeyDriver",
    "load_drivers",
    "present_devices",
]
