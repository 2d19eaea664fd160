"""The emulated cabinet's operator controls as gateway commands: show, plug, unplug.

A gateway driving emulated devices answers `gateway.<id>.emulator_show|plug|unplug`, so the
console asks it over the bus instead of reading and writing the state files itself; the
command line (`clearcard emulator ...`) still works on the files directly, with no gateway up.
"""

from __future__ import annotations

from functools import partial

import trio

from device_gateway.emulator import admin
from shared.bus.rpc import Operation
from shared.config import Settings
from shared.messages.device import DeviceCommand, EmulatorDone, EmulatorState


async def show(settings: Settings, cmd: DeviceCommand) -> EmulatorState:
    return EmulatorState(state=await trio.to_thread.run_sync(admin.show_device, settings, cmd.device_id))


async def plug(settings: Settings, plugged: bool, cmd: DeviceCommand) -> EmulatorDone:
    await trio.to_thread.run_sync(admin.plug if plugged else admin.unplug, settings, cmd.device_id)
    return EmulatorDone(device_id=cmd.device_id, done="plug" if plugged else "unplug")


def operations(settings: Settings) -> dict[str, Operation]:
    """Reads and idempotent marker changes: nothing to remember for a redelivery."""
    return {
        "emulator_show": Operation(DeviceCommand, partial(show, settings), remember=False),
        "emulator_plug": Operation(DeviceCommand, partial(plug, settings, True), remember=False),
        "emulator_unplug": Operation(DeviceCommand, partial(plug, settings, False), remember=False),
    }
