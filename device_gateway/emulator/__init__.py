"""A faithful emulator of tax-control devices speaking the reference protocol over pyusb.

`firmware` holds the rules (pure), `store` the per-device state files and plug markers,
`backend` the pyusb backend, `admin` the operator view used by the CLI.
"""

from device_gateway.emulator.backend import EmulatedBackend
from device_gateway.emulator.state import DeviceState, seed_state
from device_gateway.emulator.store import EmulatorStateError, EmulatorStore

__all__ = ["DeviceState", "EmulatedBackend", "EmulatorStateError", "EmulatorStore", "seed_state"]
