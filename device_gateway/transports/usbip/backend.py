"""A pyusb backend whose devices are the devices exported by USB/IP servers (USB-sharing cabinets).

pyusb's real code path runs on it (`usb.core.find(backend=...)`, `usb.util.get_string`,
`set_configuration`, claim, bulk `write`/`read`), so the family drivers reach a device in a
cabinet exactly as they reach one on a local port. Built on the host side of the pure-Python
`usbip` package (no kernel module); the parts:

- **Enumeration** (here) asks each server for its device list (one short TCP connection per
  server per scan). An unreachable server contributes no devices (they read as unplugged).
- **Descriptors** (`descriptors.py`) are read once per exported device and kept.
- **Links** (`links.py`): the import of a device, held while any handle that used it is open;
  one request in flight per connection; a timeout drops the connection and raises
  `USBTimeoutError(msg, -7, ETIMEDOUT)`, a broken one raises `USBError(msg, -4, ENODEV)` and its
  handles stay dead, as a libusb handle of an unplugged device does; an import refused as busy
  raises EBUSY (-6).
- **Transfers** (`transfers.py`) and **handles** (here): pyusb's calls on an open device.
- The operation-phase wire format is `wire.py`, shared with the emulated cabinet.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import structlog
import usb.backend
from usbip import core as usbip_core  # type: ignore[import-untyped]

from device_gateway.transports.usb_errors import busy, no_device, timed_out
from device_gateway.transports.usbip import descriptors, transfers, wire
from device_gateway.transports.usbip.links import Connector, Handle, Link, RemoteDevice

log = structlog.get_logger("clearcard.gateway")

CONNECT_TIMEOUT_S = 2.0  # connecting, listing and importing
MAX_TRANSFER_TIMEOUT_S = 60.0  # pyusb's "no timeout" (0) still comes back after this
_SET_CONFIGURATION, _GET_CONFIGURATION, _SET_INTERFACE, _CLEAR_FEATURE = 9, 8, 11, 1


class UsbipBackend(usb.backend.IBackend):
    """The devices exported by one or more USB/IP servers, as a pyusb backend."""

    def __init__(
        self,
        servers: Iterable[tuple[str, int]],
        *,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        max_transfer_timeout: float = MAX_TRANSFER_TIMEOUT_S,
        nodelay: bool = True,
    ) -> None:
        super().__init__()
        self.servers = list(dict.fromkeys(servers))
        self.connector = Connector(connect_timeout, nodelay)
        self.max_transfer_timeout = max_transfer_timeout
        self._links: dict[tuple[tuple[str, int], str], Link] = {}
        self._links_lock = threading.Lock()
        self._unreachable: set[tuple[str, int]] = set()

    def _link(self, ref: RemoteDevice) -> Link:
        with self._links_lock:
            return self._links.setdefault((ref.server, ref.busid), Link())

    def _until(self, timeout_ms: int) -> float:
        return transfers.deadline(timeout_ms, self.max_transfer_timeout)

    # --- enumeration -----------------------------------------------------------------------

    def list_server(self, server: tuple[str, int]) -> list[dict[str, Any]]:
        """What one server exports (`usbip list -r`); raises OSError or usbip errors."""
        sock = self.connector.connect(server, self.connector.connect_timeout)
        try:
            return wire.list_devices(sock)
        finally:
            sock.close()

    def enumerate_devices(self) -> list[RemoteDevice]:
        found: list[RemoteDevice] = []
        for position, server in enumerate(self.servers):
            try:
                exported = self.list_server(server)
            except (OSError, usbip_core.USBError) as exc:
                if server not in self._unreachable:
                    log.warning("USB/IP server not reachable", server=f"{server[0]}:{server[1]}", error=str(exc))
                    self._unreachable.add(server)
                continue
            if server in self._unreachable:
                log.info("USB/IP server reachable again", server=f"{server[0]}:{server[1]}")
                self._unreachable.discard(server)
            for info in exported:
                found.append(RemoteDevice(
                    server=server, position=position, busid=info["busid"], busnum=info["busnum"],
                    devnum=info["devnum"], idVendor=info["idVendor"], idProduct=info["idProduct"],
                    speed=info["speed"], bNumConfigurations=info["bNumConfigurations"]))
        return found

    def get_parent(self, dev: RemoteDevice) -> None:
        return None

    # --- descriptors -----------------------------------------------------------------------

    def _describe(self, dev: RemoteDevice) -> descriptors.Descriptors | None:
        return descriptors.describe(self.connector, self._link(dev), dev)

    def get_device_descriptor(self, dev: RemoteDevice) -> SimpleNamespace:
        return descriptors.device_descriptor(dev, self._describe(dev))

    def _interfaces(self, dev: RemoteDevice, config: int) -> tuple[SimpleNamespace, descriptors.Interfaces]:
        configs = descriptors.readable(self._describe(dev), dev).configs
        if not 0 <= config < len(configs):
            raise IndexError("configuration index out of range")
        return descriptors.config_tree(configs[config])

    def get_configuration_descriptor(self, dev: RemoteDevice, config: int) -> SimpleNamespace:
        return self._interfaces(dev, config)[0]

    def _alternate(self, dev: RemoteDevice, intf: int, alt: int,
                   config: int) -> tuple[SimpleNamespace, list[SimpleNamespace]]:
        interfaces = self._interfaces(dev, config)[1]
        if not 0 <= intf < len(interfaces) or not 0 <= alt < len(interfaces[intf]):
            raise IndexError("interface index out of range")
        return interfaces[intf][alt]

    def get_interface_descriptor(self, dev: RemoteDevice, intf: int, alt: int, config: int) -> SimpleNamespace:
        return self._alternate(dev, intf, alt, config)[0]

    def get_endpoint_descriptor(self, dev: RemoteDevice, ep: int, intf: int, alt: int,
                                config: int) -> SimpleNamespace:
        endpoints = self._alternate(dev, intf, alt, config)[1]
        if not 0 <= ep < len(endpoints):
            raise IndexError("endpoint index out of range")
        return endpoints[ep]

    # --- handles ---------------------------------------------------------------------------

    def open_device(self, dev: RemoteDevice) -> Handle:
        """A handle; the device is imported by its first transfer or claim, not here."""
        link = self._link(dev)
        return Handle(dev, link, link.generation)

    def close_device(self, dev_handle: Handle) -> None:
        link = dev_handle.link
        with link.lock:
            if dev_handle.closed:
                return
            dev_handle.closed = True
            for intf in dev_handle.claimed:
                if link.claims.get(intf) is dev_handle:
                    del link.claims[intf]
            dev_handle.claimed.clear()
            if dev_handle.holds_import:
                link.users -= 1
                if link.users == 0:
                    self.connector.drop(link, broken=False)  # the server frees the device for other hosts

    def _setup_out(self, handle: Handle, request: tuple[int, int, int, int], what: str) -> None:
        setup = usbip_core.Setup(*request, 0).pack()
        transfers.transfer(self.connector, handle,
                           usbip_core.Urb(direction=usbip_core.OUT, ep=0, setup=setup, length=0),
                           self._until(0), what)

    def set_configuration(self, dev_handle: Handle, config_value: int) -> None:
        self._setup_out(dev_handle, (0x00, _SET_CONFIGURATION, config_value, 0), "SET_CONFIGURATION")
        dev_handle.configuration = config_value

    def get_configuration(self, dev_handle: Handle) -> int:
        if dev_handle.configuration is None:
            setup = usbip_core.Setup(0x80, _GET_CONFIGURATION, 0, 0, 1).pack()
            done = transfers.transfer(self.connector, dev_handle,
                                      usbip_core.Urb(direction=usbip_core.IN, ep=0, setup=setup, length=1),
                                      self._until(0), "GET_CONFIGURATION")
            dev_handle.configuration = done.buffer[0] if done.actual else 0
        return dev_handle.configuration

    def set_interface_altsetting(self, dev_handle: Handle, intf: int, altsetting: int) -> None:
        self._setup_out(dev_handle, (0x01, _SET_INTERFACE, altsetting, intf), "SET_INTERFACE")

    def claim_interface(self, dev_handle: Handle, intf: int) -> None:
        """Claiming imports the device (USB/IP import is exclusive: busy if another host has it)."""
        link = dev_handle.alive()
        until = time.monotonic() + self.connector.connect_timeout
        if not link.lock.acquire(timeout=self.connector.connect_timeout):
            raise timed_out(f"claiming {dev_handle.ref}: the connection stayed busy")
        try:
            if dev_handle.generation != link.generation:
                raise no_device(str(dev_handle.ref))
            holder = link.claims.get(intf)
            if holder is not None and holder is not dev_handle:
                raise busy(f"interface {intf} of {dev_handle.ref} is claimed")
            self.connector.import_device(link, dev_handle.ref, until)
            if not dev_handle.holds_import:
                dev_handle.holds_import = True
                link.users += 1
            link.claims[intf] = dev_handle
            dev_handle.claimed.add(intf)
        finally:
            link.lock.release()

    def release_interface(self, dev_handle: Handle, intf: int) -> None:
        link = dev_handle.link
        with link.lock:
            dev_handle.claimed.discard(intf)
            if link.claims.get(intf) is dev_handle:
                del link.claims[intf]

    def clear_halt(self, dev_handle: Handle, ep: int) -> None:
        self._setup_out(dev_handle, (0x02, _CLEAR_FEATURE, 0, ep), "CLEAR_FEATURE(ENDPOINT_HALT)")

    def reset_device(self, dev_handle: Handle) -> None:
        """USB/IP has no reset request: import again (the server resets the device's pipes)."""
        link = dev_handle.alive()
        with link.lock:
            self.connector.drop(link, broken=False)

    def is_kernel_driver_active(self, dev_handle: Handle, intf: int) -> bool:
        return False

    def detach_kernel_driver(self, dev_handle: Handle, intf: int) -> None:
        return None

    def attach_kernel_driver(self, dev_handle: Handle, intf: int) -> None:
        return None

    # --- transfers -------------------------------------------------------------------------

    def ctrl_transfer(self, dev_handle: Handle, bmRequestType: int, bRequest: int, wValue: int,
                      wIndex: int, data: Any, timeout: int) -> int:
        return transfers.control(self.connector, dev_handle, (bmRequestType, bRequest, wValue, wIndex), data,
                                 self._until(timeout))

    def bulk_write(self, dev_handle: Handle, ep: int, intf: int, data: Any, timeout: int) -> int:
        return transfers.endpoint_out(self.connector, dev_handle, ep, data, self._until(timeout))

    def bulk_read(self, dev_handle: Handle, ep: int, intf: int, buff: Any, timeout: int) -> int:
        return transfers.endpoint_in(self.connector, dev_handle, ep, buff, self._until(timeout))

    def intr_write(self, dev_handle: Handle, ep: int, intf: int, data: Any, timeout: int) -> int:
        return transfers.endpoint_out(self.connector, dev_handle, ep, data, self._until(timeout), interrupt=True)

    def intr_read(self, dev_handle: Handle, ep: int, intf: int, buff: Any, timeout: int) -> int:
        return transfers.endpoint_in(self.connector, dev_handle, ep, buff, self._until(timeout), interrupt=True)

    def close(self) -> None:
        """Close every connection (handles still open become dead)."""
        with self._links_lock:
            links = list(self._links.values())
        for link in links:
            with link.lock:
                self.connector.drop(link, broken=True)
