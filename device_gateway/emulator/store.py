"""Where emulated devices keep their memory: `<data_dir>/emulator/<device_id>.json`.

Written atomically (temporary file, rename) after every change, so a crash of the gateway
leaves the old or the new state, never half of one. There is no fsync: this file stands in for
a device's own flash memory, not for anything the product must keep, and an fsync per command
made the emulator, not the product, the bottleneck of every benchmark (docs/performance.md).
A power loss of the emulating machine may therefore lose a device's last changes, which a
real device would have kept. A `<device_id>.unplugged` marker file means the
device is pulled out of its port; the CLI and the running gateway see the same files.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from device_gateway.emulator.state import DeviceState, seed_state
from shared.fleet import Fleet
from shared.tax_calendar import DEFAULT, TaxCalendar

_DEVICE_ID = re.compile(r"^[0-9]{12}$")


class EmulatorStateError(Exception):
    """A state file exists but cannot be read back (damaged or from an unknown version)."""


class EmulatorStore:
    """The state files and plug markers of emulated devices under one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, device_id: str, suffix: str) -> Path:
        if not _DEVICE_ID.match(device_id):
            raise ValueError(f"{device_id!r} is not a 12-digit device number")
        return self.directory / f"{device_id}{suffix}"

    def state_path(self, device_id: str) -> Path:
        """Path of a device's state file."""
        return self._path(device_id, ".json")

    def load(self, device_id: str) -> DeviceState | None:
        """A device's saved state, or None if it was never seeded."""
        path = self.state_path(device_id)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return DeviceState.model_validate_json(text)
        except ValidationError as exc:
            raise EmulatorStateError(f"{path}: damaged emulator state: {exc.errors()[0]['msg']}") from None

    def stamp(self, device_id: str) -> tuple[int, int, int] | None:
        """What identifies the state file's current version on disk (mtime, size, inode), or None.

        A save renames a new file into place, so the inode changes with every save even when
        the clock's resolution would hide the new mtime.
        """
        try:
            st = self.state_path(device_id).stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def save(self, state: DeviceState) -> None:
        """Persist a state atomically: temporary file + rename (no fsync; see the module doc)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.state_path(state.device_id)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        data = state.model_dump_json(indent=2).encode("utf-8")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def seed(self, fleet: Fleet, wall_now: datetime, calendar: TaxCalendar = DEFAULT) -> dict[str, DeviceState]:
        """Every fleet device's state: saved state wins; devices without one are seeded now."""
        states: dict[str, DeviceState] = {}
        for device in fleet.devices:
            state = self.load(device.id)
            if state is None:
                state = seed_state(device, fleet.clock, wall_now, calendar)
                self.save(state)
            states[device.id] = state
        return states

    def device_ids(self) -> list[str]:
        """Every device with a saved state."""
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json") if _DEVICE_ID.match(p.stem))

    def is_plugged(self, device_id: str) -> bool:
        """False while the device's unplugged marker exists."""
        return not self._path(device_id, ".unplugged").exists()

    def set_plugged(self, device_id: str, plugged: bool) -> None:
        """Plug (remove the marker) or unplug (create it) a device."""
        marker = self._path(device_id, ".unplugged")
        if plugged:
            marker.unlink(missing_ok=True)
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            marker.touch()

    def is_held(self, device_id: str) -> bool:
        """True while another program holds the device (its held marker exists)."""
        return self._path(device_id, ".held").exists()

    def set_held(self, device_id: str, held: bool) -> None:
        """Let another program take (create the marker) or give back (remove it) the device."""
        marker = self._path(device_id, ".held")
        if held:
            self.directory.mkdir(parents=True, exist_ok=True)
            marker.touch()
        else:
            marker.unlink(missing_ok=True)
