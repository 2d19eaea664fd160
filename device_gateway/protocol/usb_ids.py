"""USB identities of the reference devices (emulation only).

Vendor 0x1209 is the pid.codes open-hardware vendor id; the product ids below are NOT
allocated there and identify nothing real: they exist so the emulated devices look like USB
devices to pyusb. Real hardware is reached through vendor drivers with their own ids.
"""

from __future__ import annotations

VENDOR_ID = 0x1209
PRODUCT_IDS: dict[str, int] = {
    "ukey": 0xCC01,
    "golden_tax_disk": 0xCC02,
    "tax_control_disk": 0xCC03,
}
PRODUCT_NAMES: dict[str, str] = {
    "ukey": "ClearCard reference tax UKey (emulated)",
    "golden_tax_disk": "ClearCard reference golden tax disk (emulated)",
    "tax_control_disk": "ClearCard reference tax control disk (emulated)",
}
MANUFACTURER = "ClearCard emulator"
INTERFACE = 0
EP_OUT = 0x01
EP_IN = 0x81
MAX_PACKET = 512
