"""`clearcard emulator`: the emulated devices' state files (CLEARCARD_FLEET), no running gateway needed."""

from __future__ import annotations

import typer

from clearcard.commands.common import JsonOpt, err, fail, out, print_json, settings_from_env

app = typer.Typer(help="Emulated devices (CLEARCARD_FLEET).", no_args_is_help=True)


@app.command("show")
def emulator_show(device: str, as_json: JsonOpt = False) -> None:
    """An emulated device's full state: write-backs, reports, PIN tries, lock date, status."""
    from device_gateway.emulator.admin import show_device
    from shared.errors import ClearCardError

    try:
        state = show_device(settings_from_env(), device)
    except ClearCardError as exc:
        raise fail(f"{device}: {exc.message}") from None
    if as_json:
        print_json(state)
    else:
        out.print_json(data=state)


def _emulator_action(device: str, action: str, done: str) -> None:
    """Run one of device_gateway.emulator.admin's marker actions and say what happened."""
    from device_gateway.emulator import admin
    from shared.errors import ClearCardError

    actions = {
        "plug": lambda s: admin.plug(s, device),
        "unplug": lambda s: admin.unplug(s, device),
        "hold": lambda s: admin.hold(s, device, True),
        "release": lambda s: admin.hold(s, device, False),
    }
    try:
        actions[action](settings_from_env())
    except ClearCardError as exc:
        raise fail(f"{device}: {exc.message}") from None
    err.print(f"{device} {done}")


@app.command("plug")
def emulator_plug(device: str) -> None:
    """Connect an emulated device (the running gateway finds it again)."""
    _emulator_action(device, "plug", "plugged in")


@app.command("unplug")
def emulator_unplug(device: str) -> None:
    """Disconnect an emulated device while the gateway runs."""
    _emulator_action(device, "unplug", "unplugged")


@app.command("hold")
def emulator_hold(device: str) -> None:
    """Let another program (the invoicing software) hold the device: commands get DEVICE_BUSY."""
    _emulator_action(device, "hold", "held by another program")


@app.command("release")
def emulator_release(device: str) -> None:
    """Release a device held by `emulator hold`."""
    _emulator_action(device, "release", "released")
