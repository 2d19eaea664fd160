"""Several pyusb backends seen as one: the gateway's local devices and its USB/IP servers.

Drivers keep one backend (their plug-in constructor is `(backend, device_id)`); this one
enumerates its sources in order, so `usb.core.find` returns a device from the first source
that has it. The gateway puts USB/IP servers first: a device exported by a cabinet is used
there even when the local emulator also knows its id. A source whose enumeration fails is
skipped for that scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
import usb.backend
import usb.core

log = structlog.get_logger("clearcard.gateway")


@dataclass(frozen=True)
class SourceDevice:
    source: int
    device: Any


@dataclass(eq=False)
class SourceHandle:
    source: int
    handle: Any


class CompositeBackend(usb.backend.IBackend):
    """The devices of every source backend, in source order."""

    def __init__(self, sources: Sequence[usb.backend.IBackend]) -> None:
        super().__init__()
        self.sources = list(sources)

    def enumerate_devices(self) -> list[SourceDevice]:
        found: list[SourceDevice] = []
        for index, source in enumerate(self.sources):
            try:
                found.extend(SourceDevice(index, dev) for dev in source.enumerate_devices())
            except usb.core.USBError as exc:
                log.warning("device enumeration failed on one source", source=type(source).__name__,
                            error=str(exc))
        return found

    def _of(self, dev: SourceDevice) -> Any:
        return self.sources[dev.source]

    def get_parent(self, dev: SourceDevice) -> SourceDevice | None:
        parent = self._of(dev).get_parent(dev.device)
        return None if parent is None else SourceDevice(dev.source, parent)

    def get_device_descriptor(self, dev: SourceDevice) -> Any:
        return self._of(dev).get_device_descriptor(dev.device)

    def get_configuration_descriptor(self, dev: SourceDevice, config: int) -> Any:
        return self._of(dev).get_configuration_descriptor(dev.device, config)

    def get_interface_descriptor(self, dev: SourceDevice, intf: int, alt: int, config: int) -> Any:
        return self._of(dev).get_interface_descriptor(dev.device, intf, alt, config)

    def get_endpoint_descriptor(self, dev: SourceDevice, ep: int, intf: int, alt: int, config: int) -> Any:
        return self._of(dev).get_endpoint_descriptor(dev.device, ep, intf, alt, config)

    def open_device(self, dev: SourceDevice) -> SourceHandle:
        return SourceHandle(dev.source, self._of(dev).open_device(dev.device))

    def _h(self, handle: SourceHandle) -> Any:
        return self.sources[handle.source]

    def close_device(self, dev_handle: SourceHandle) -> None:
        self._h(dev_handle).close_device(dev_handle.handle)

    def set_configuration(self, dev_handle: SourceHandle, config_value: int) -> None:
        self._h(dev_handle).set_configuration(dev_handle.handle, config_value)

    def get_configuration(self, dev_handle: SourceHandle) -> int:
        return int(self._h(dev_handle).get_configuration(dev_handle.handle))

    def set_interface_altsetting(self, dev_handle: SourceHandle, intf: int, altsetting: int) -> None:
        self._h(dev_handle).set_interface_altsetting(dev_handle.handle, intf, altsetting)

    def claim_interface(self, dev_handle: SourceHandle, intf: int) -> None:
        self._h(dev_handle).claim_interface(dev_handle.handle, intf)

    def release_interface(self, dev_handle: SourceHandle, intf: int) -> None:
        self._h(dev_handle).release_interface(dev_handle.handle, intf)

    def bulk_write(self, dev_handle: SourceHandle, ep: int, intf: int, data: Any, timeout: int) -> int:
        return int(self._h(dev_handle).bulk_write(dev_handle.handle, ep, intf, data, timeout))

    def bulk_read(self, dev_handle: SourceHandle, ep: int, intf: int, buff: Any, timeout: int) -> int:
        return int(self._h(dev_handle).bulk_read(dev_handle.handle, ep, intf, buff, timeout))

    def intr_write(self, dev_handle: SourceHandle, ep: int, intf: int, data: Any, timeout: int) -> int:
        return int(self._h(dev_handle).intr_write(dev_handle.handle, ep, intf, data, timeout))

    def intr_read(self, dev_handle: SourceHandle, ep: int, intf: int, buff: Any, timeout: int) -> int:
        return int(self._h(dev_handle).intr_read(dev_handle.handle, ep, intf, buff, timeout))

    def ctrl_transfer(self, dev_handle: SourceHandle, bmRequestType: int, bRequest: int, wValue: int,
                      wIndex: int, data: Any, timeout: int) -> int:
        return int(self._h(dev_handle).ctrl_transfer(dev_handle.handle, bmRequestType, bRequest, wValue,
                                                     wIndex, data, timeout))

    def clear_halt(self, dev_handle: SourceHandle, ep: int) -> None:
        self._h(dev_handle).clear_halt(dev_handle.handle, ep)

    def reset_device(self, dev_handle: SourceHandle) -> None:
        self._h(dev_handle).reset_device(dev_handle.handle)

    def is_kernel_driver_active(self, dev_handle: SourceHandle, intf: int) -> bool:
        return bool(self._h(dev_handle).is_kernel_driver_active(dev_handle.handle, intf))

    def detach_kernel_driver(self, dev_handle: SourceHandle, intf: int) -> None:
        self._h(dev_handle).detach_kernel_driver(dev_handle.handle, intf)

    def attach_kernel_driver(self, dev_handle: SourceHandle, intf: int) -> None:
        self._h(dev_handle).attach_kernel_driver(dev_handle.handle, intf)
