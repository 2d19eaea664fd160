"""A pyusb backend whose devices are the devices exported by USB/IP servers (USB-sharing cabinets).

pyusb's real code path runs on it (`usb.core.find(backend=...)`, `usb.util.get_string`,
`set_configuration`, claim, bulk `write`/`read`), so the family drivers reach a device in a
cabinet exactly as they reach one on a local port. Built on the host side of the pure-Python
`usbip` package (`usbip.protocol`: device list, URB submit; no kernel module).

- **Enumeration** asks each server for its device list (one short TCP connection per server
  per scan). An unreachable server contributes no devices (they read as unplugged).
- **Descriptors** (device, configurations, strings) are read once per exported device by
  importing it, and kept while the server lists the same device (bus id, bus and device
  number, ids): scans then cost no import. A device another host has imported cannot be read
  (USB/IP import is exclusive): it enumerates without strings, so no driver takes it.
- **Transfers** import the device on first use and keep the import while any pyusb handle
  that used it is open. One request is in flight per connection (a lock): usbip's host side
  is synchronous and has no per-transfer timeout, so the socket timeout is set from each
  transfer's timeout; on expiry the connection is dropped (its stream position is unknown)
  and `USBTimeoutError(msg, -7, ETIMEDOUT)` raised; the next transfer imports again. A
  connection that breaks raises `USBError(msg, -4, ENODEV)` and the handle stays dead, as a
  libusb handle of an unplugged device does. An import refused as busy raises EBUSY (-6).
- `TCP_NODELAY` is set on every client socket: each transfer is a small request followed by
  a small reply, and Nagle plus delayed ACKs otherwise cap it near 25 round trips/s.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import structlog
import usb.backend
import usb.core
from usbip import core as usbip_core  # type: ignore[import-untyped]
from usbip import protocol

log = structlog.get_logger("clearcard.gateway")

LIBUSB_ERROR_IO = -1
LIBUSB_ERROR_NO_DEVICE = -4
LIBUSB_ERROR_BUSY = -6
LIBUSB_ERROR_TIMEOUT = -7
LIBUSB_ERROR_PIPE = -9

CONNECT_TIMEOUT_S = 2.0  # connecting, listing and importing
MAX_TRANSFER_TIMEOUT_S = 60.0  # pyusb's "no timeout" (0) still comes back after this
BUS_STRIDE = 1000  # bus numbers: 1000 x (server position + 1) + the server's own bus number

# OP_REP_IMPORT status words (usbip_common.h)
ST_OK, ST_NA, ST_DEV_BUSY, ST_DEV_ERR, ST_NODEV, ST_ERROR = 0, 1, 2, 3, 4, 5
_USB_DEVICE_LEN = struct.calcsize(">256s32sIIIHHHBBBBBB")  # struct usbip_usb_device
_WIRE_SPEED_TO_PYUSB = {1: 1, 2: 2, 3: 3, 4: 3, 5: 4, 6: 4}  # kernel usb_device_speed -> usb.util.SPEED_*
_GET_DESCRIPTOR, _SET_CONFIGURATION, _GET_CONFIGURATION, _SET_INTERFACE, _CLEAR_FEATURE = 6, 9, 8, 11, 1
_DT_DEVICE, _DT_CONFIG, _DT_STRING, _DT_INTERFACE, _DT_ENDPOINT = 1, 2, 3, 4, 5


def _no_device(what: str) -> usb.core.USBError:
    return usb.core.USBError(f"No such device (it may have been disconnected): {what}",
                             LIBUSB_ERROR_NO_DEVICE, errno.ENODEV)


def _timed_out(what: str) -> usb.core.USBTimeoutError:
    return usb.core.USBTimeoutError(f"Operation timed out: {what}", LIBUSB_ERROR_TIMEOUT, errno.ETIMEDOUT)


def _busy(what: str) -> usb.core.USBError:
    return usb.core.USBError(f"Resource busy: {what}", LIBUSB_ERROR_BUSY, errno.EBUSY)


def _urb_error(status: int, what: str) -> usb.core.USBError:
    """A failed URB's status (a negative Linux errno) as libusb reports it."""
    number = -status
    if number == errno.EPIPE:
        return usb.core.USBError(f"Pipe error: {what}", LIBUSB_ERROR_PIPE, errno.EPIPE)
    if number in (errno.ENODEV, errno.ESHUTDOWN, errno.ENOENT):
        return _no_device(what)
    if number == errno.ETIMEDOUT:
        return _timed_out(what)
    if number == errno.EBUSY:
        return _busy(what)
    return usb.core.USBError(f"Input/Output Error: {what} (URB status {status})", LIBUSB_ERROR_IO, errno.EIO)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionResetError("the USB/IP server closed the connection")
        buf += chunk
    return bytes(buf)


@dataclass(frozen=True)
class RemoteDevice:
    """What enumeration yields for one exported device (opaque to pyusb)."""

    server: tuple[str, int]
    position: int  # the server's place in the backend's list
    busid: str
    busnum: int
    devnum: int
    idVendor: int
    idProduct: int
    speed: int  # the wire (kernel) speed value
    bNumConfigurations: int

    @property
    def identity(self) -> tuple[int, int, int, int]:
        return self.busnum, self.devnum, self.idVendor, self.idProduct

    def __str__(self) -> str:
        return f"{self.busid} on {self.server[0]}:{self.server[1]}"


@dataclass
class _Descriptors:
    identity: tuple[int, int, int, int]
    device: bytes
    configs: list[bytes]
    strings: dict[tuple[int, int], bytes] = field(default_factory=dict)  # (index, langid) -> descriptor


@dataclass(eq=False)
class _Link:
    """This backend's way to one exported device: its import (connection) and what it read."""

    lock: threading.Lock = field(default_factory=threading.Lock)  # one request in flight
    sock: socket.socket | None = None
    seqnum: int = 0
    devid: int = 0
    generation: int = 0  # bumped when the connection breaks: older handles are dead
    users: int = 0  # open handles that hold the import
    descriptors: _Descriptors | None = None
    claims: dict[int, object] = field(default_factory=dict)  # interface -> claiming handle


@dataclass(eq=False)
class _Handle:
    ref: RemoteDevice
    link: _Link
    generation: int
    holds_import: bool = False
    claimed: set[int] = field(default_factory=set)
    configuration: int | None = None
    closed: bool = False


def _config_tree(blob: bytes) -> tuple[SimpleNamespace, list[list[tuple[SimpleNamespace, list[SimpleNamespace]]]]]:
    """A configuration descriptor set -> (configuration, interfaces[number][alt] = (intf, endpoints))."""
    if len(blob) < 9:
        raise usb.core.USBError("short configuration descriptor", LIBUSB_ERROR_IO, errno.EIO)
    length, kind, total, n_if, value, i_config, attrs, power = struct.unpack("<BBHBBBBB", blob[:9])
    config = SimpleNamespace(bLength=length, bDescriptorType=kind, wTotalLength=total, bNumInterfaces=n_if,
                             bConfigurationValue=value, iConfiguration=i_config, bmAttributes=attrs,
                             bMaxPower=power, extra_descriptors=[])
    groups: dict[int, list[tuple[SimpleNamespace, list[SimpleNamespace]]]] = {}
    owner: Any = config
    endpoints: list[SimpleNamespace] = []
    for desc in usbip_core.iter_descriptors(blob, offset=length):
        if desc[1] == _DT_INTERFACE and len(desc) >= 9:
            fields = struct.unpack("<BBBBBBBBB", desc[:9])
            owner = SimpleNamespace(bLength=fields[0], bDescriptorType=fields[1], bInterfaceNumber=fields[2],
                                    bAlternateSetting=fields[3], bNumEndpoints=fields[4],
                                    bInterfaceClass=fields[5], bInterfaceSubClass=fields[6],
                                    bInterfaceProtocol=fields[7], iInterface=fields[8], extra_descriptors=[])
            endpoints = []
            groups.setdefault(fields[2], []).append((owner, endpoints))
        elif desc[1] == _DT_ENDPOINT and len(desc) >= 7 and owner is not config:
            b_length, kind, address, attributes, packet, interval = struct.unpack("<BBBBHB", desc[:7])
            owner = SimpleNamespace(bLength=b_length, bDescriptorType=kind, bEndpointAddress=address,
                                    bmAttributes=attributes, wMaxPacketSize=packet, bInterval=interval,
                                    bRefresh=desc[7] if len(desc) > 7 else 0,
                                    bSynchAddress=desc[8] if len(desc) > 8 else 0, extra_descriptors=[])
            endpoints.append(owner)
        else:
            owner.extra_descriptors.extend(desc)  # class-specific: belongs to what precedes it
    return config, [groups[number] for number in sorted(groups)]


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
        self.connect_timeout = connect_timeout
        self.nodelay = nodelay  # False only to measure what Nagle costs (device_gateway/transports/bench.py)
        self.max_transfer_timeout = max_transfer_timeout
        self._links: dict[tuple[tuple[str, int], str], _Link] = {}
        self._links_lock = threading.Lock()
        self._unreachable: set[tuple[str, int]] = set()

    # --- connections -----------------------------------------------------------------------

    def _connect(self, server: tuple[str, int], timeout: float) -> socket.socket:
        sock = socket.create_connection(server, timeout=max(0.001, timeout))
        if self.nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # ~100x more round trips/s
        return sock

    def list_server(self, server: tuple[str, int]) -> list[dict[str, Any]]:
        """What one server exports (`usbip list -r`); raises OSError or usbip errors."""
        sock = self._connect(server, self.connect_timeout)
        try:
            return list(protocol.client_devlist(sock))
        finally:
            sock.close()

    def _link(self, ref: RemoteDevice) -> _Link:
        with self._links_lock:
            return self._links.setdefault((ref.server, ref.busid), _Link())

    def _import(self, link: _Link, ref: RemoteDevice, deadline: float) -> socket.socket:
        """Import the device (caller holds link.lock); the connection stays on the link."""
        if link.sock is not None:
            return link.sock
        try:
            sock = self._connect(ref.server, min(self.connect_timeout, deadline - time.monotonic()))
        except TimeoutError:
            raise _timed_out(f"connecting to {ref}") from None
        except OSError as exc:
            raise _no_device(f"{ref}: {exc}") from None
        try:
            sock.settimeout(max(0.001, min(self.connect_timeout, deadline - time.monotonic())))
            sock.sendall(struct.pack(">HHI", protocol.VERSION, protocol.OP_REQ_IMPORT, 0)
                         + ref.busid.encode().ljust(32, b"\0"))
            _version, _code, status = struct.unpack(">HHI", _recv_exact(sock, 8))
            if status == ST_DEV_BUSY:
                raise _busy(f"{ref} is imported by another host or in use on the server")
            if status != ST_OK:
                raise _no_device(f"{ref}: import refused (status {status})")
            info = protocol.parse_usb_device(_recv_exact(sock, _USB_DEVICE_LEN))
        except usb.core.USBError:  # (an OSError too: keep it first)
            sock.close()
            raise
        except TimeoutError:
            sock.close()
            raise _timed_out(f"importing {ref}") from None
        except OSError as exc:
            sock.close()
            raise _no_device(f"{ref}: {exc}") from None
        if (info["busnum"], info["devnum"], info["idVendor"], info["idProduct"]) != ref.identity:
            sock.close()
            raise _no_device(f"{ref}: another device is there now")
        link.sock, link.devid, link.seqnum = sock, (info["busnum"] << 16) | info["devnum"], 0
        return sock

    def _drop(self, link: _Link, *, broken: bool) -> None:
        """Close the link's connection; `broken` also kills the handles opened before."""
        sock, link.sock = link.sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        if broken:
            link.generation += 1
            link.claims.clear()

    def _submit(self, link: _Link, ref: RemoteDevice, urb: Any, deadline: float, what: str) -> Any:
        """One URB over the link's connection (caller holds link.lock); returns the completed URB."""
        sock = self._import(link, ref, deadline)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timed_out(what)
        link.seqnum = (link.seqnum + 1) & 0xFFFFFFFF
        urb.seqnum, urb.devid = link.seqnum, link.devid
        try:
            sock.settimeout(remaining)
            done = protocol.client_submit(sock, urb)
        except TimeoutError:
            # the stream may be mid-reply: drop it; the next transfer imports again
            self._drop(link, broken=False)
            raise _timed_out(f"{what} on {ref}") from None
        except (OSError, usbip_core.USBError) as exc:
            self._drop(link, broken=True)
            raise _no_device(f"{ref}: {exc}") from None
        if done.status != 0:
            if -done.status in (errno.ENODEV, errno.ESHUTDOWN):
                self._drop(link, broken=True)
            raise _urb_error(done.status, f"{what} on {ref}")
        return done

    def _deadline(self, timeout_ms: int) -> float:
        seconds = timeout_ms / 1000 if timeout_ms and timeout_ms > 0 else self.max_transfer_timeout
        return time.monotonic() + min(seconds, self.max_transfer_timeout)

    def _transfer(self, handle: _Handle, urb: Any, timeout_ms: int, what: str) -> Any:
        link = self._alive(handle)
        deadline = self._deadline(timeout_ms)
        if not link.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise _timed_out(f"{what} on {handle.ref}: the connection stayed busy")
        try:
            if handle.generation != link.generation:
                raise _no_device(str(handle.ref))
            if not handle.holds_import:
                handle.holds_import = True
                link.users += 1
            return self._submit(link, handle.ref, urb, deadline, what)
        finally:
            link.lock.release()

    def _control_in(self, link: _Link, ref: RemoteDevice, request: tuple[int, int, int, int],
                    length: int, deadline: float) -> bytes:
        setup = usbip_core.Setup(request[0], request[1], request[2], request[3], length).pack()
        done = self._submit(link, ref, usbip_core.Urb(direction=usbip_core.IN, ep=0, setup=setup, length=length),
                            deadline, f"control {request[1]:#x}")
        return bytes(done.buffer[:done.actual])

    # --- descriptors -----------------------------------------------------------------------

    def _describe(self, ref: RemoteDevice) -> _Descriptors | None:
        """The device's descriptors (cached per identity), or None if it cannot be read now."""
        link = self._link(ref)
        cached = link.descriptors
        if cached is not None and cached.identity == ref.identity:
            return cached
        deadline = time.monotonic() + self.connect_timeout
        if not link.lock.acquire(timeout=self.connect_timeout):
            return None
        try:
            cached = link.descriptors
            if cached is not None and cached.identity == ref.identity:
                return cached
            if cached is not None:  # another device now: older handles are dead
                self._drop(link, broken=True)
                link.descriptors = None
            transient = link.sock is None
            try:
                described = self._read_descriptors(link, ref, deadline)
            except usb.core.USBError as exc:
                log.info("USB/IP device descriptors not readable", device=str(ref), error=str(exc))
                return None
            finally:
                if transient and link.users == 0:
                    self._drop(link, broken=False)
            link.descriptors = described
            return described
        finally:
            link.lock.release()

    def _read_descriptors(self, link: _Link, ref: RemoteDevice, deadline: float) -> _Descriptors:
        device = self._control_in(link, ref, (0x80, _GET_DESCRIPTOR, _DT_DEVICE << 8, 0), 18, deadline)
        if len(device) < 18:
            raise usb.core.USBError("short device descriptor", LIBUSB_ERROR_IO, errno.EIO)
        configs = []
        for index in range(device[17]):
            head = self._control_in(link, ref, (0x80, _GET_DESCRIPTOR, _DT_CONFIG << 8 | index, 0), 9, deadline)
            total = struct.unpack("<H", head[2:4])[0] if len(head) >= 4 else 9
            configs.append(self._control_in(link, ref, (0x80, _GET_DESCRIPTOR, _DT_CONFIG << 8 | index, 0),
                                            total, deadline))
        described = _Descriptors(ref.identity, device, configs)
        # the strings every scan reads (serial number above all), so scans need no import
        try:
            langids = self._control_in(link, ref, (0x80, _GET_DESCRIPTOR, _DT_STRING << 8, 0), 255, deadline)
        except usb.core.USBError as exc:
            if exc.errno != errno.EPIPE:
                raise
            return described  # no strings at all
        described.strings[(0, 0)] = langids
        if len(langids) >= 4:
            langid = struct.unpack("<H", langids[2:4])[0]
            for index in {device[14], device[15], device[16]} - {0}:
                try:
                    described.strings[(index, langid)] = self._control_in(
                        link, ref, (0x80, _GET_DESCRIPTOR, _DT_STRING << 8 | index, langid), 255, deadline)
                except usb.core.USBError as exc:
                    if exc.errno != errno.EPIPE:
                        raise
        return described

    def _descriptors(self, ref: RemoteDevice) -> _Descriptors:
        described = self._describe(ref)
        if described is None:
            raise _no_device(f"{ref}: descriptors not readable (imported by another host?)")
        return described

    # --- pyusb backend: enumeration and descriptors ----------------------------------------

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

    def get_device_descriptor(self, dev: RemoteDevice) -> SimpleNamespace:
        described = self._describe(dev)
        ports = tuple(int(p) for p in dev.busid.split("-", 1)[-1].split(".") if p.isdigit())
        common = {"bus": BUS_STRIDE * (dev.position + 1) + dev.busnum, "address": dev.devnum,
                  "port_number": ports[-1] if ports else None, "port_numbers": ports,
                  "speed": _WIRE_SPEED_TO_PYUSB.get(dev.speed)}
        if described is None:
            # not readable now (another host holds it): what the device list says, no strings
            return SimpleNamespace(bLength=18, bDescriptorType=_DT_DEVICE, bcdUSB=0x0200, bDeviceClass=0,
                                   bDeviceSubClass=0, bDeviceProtocol=0, bMaxPacketSize0=64,
                                   idVendor=dev.idVendor, idProduct=dev.idProduct, bcdDevice=0,
                                   iManufacturer=0, iProduct=0, iSerialNumber=0, bNumConfigurations=0,
                                   **common)
        fields = struct.unpack("<BBHBBBBHHHBBBB", described.device[:18])
        names = ("bLength", "bDescriptorType", "bcdUSB", "bDeviceClass", "bDeviceSubClass", "bDeviceProtocol",
                 "bMaxPacketSize0", "idVendor", "idProduct", "bcdDevice", "iManufacturer", "iProduct",
                 "iSerialNumber", "bNumConfigurations")
        return SimpleNamespace(**dict(zip(names, fields, strict=True)), **common)

    def _config(self, dev: RemoteDevice, config: int) -> tuple[SimpleNamespace, list[Any]]:
        configs = self._descriptors(dev).configs
        if not 0 <= config < len(configs):
            raise IndexError("configuration index out of range")
        return _config_tree(configs[config])

    def get_configuration_descriptor(self, dev: RemoteDevice, config: int) -> SimpleNamespace:
        return self._config(dev, config)[0]

    def get_interface_descriptor(self, dev: RemoteDevice, intf: int, alt: int, config: int) -> SimpleNamespace:
        interfaces = self._config(dev, config)[1]
        if not 0 <= intf < len(interfaces) or not 0 <= alt < len(interfaces[intf]):
            raise IndexError("interface index out of range")
        descriptor: SimpleNamespace = interfaces[intf][alt][0]
        return descriptor

    def get_endpoint_descriptor(self, dev: RemoteDevice, ep: int, intf: int, alt: int,
                                config: int) -> SimpleNamespace:
        interfaces = self._config(dev, config)[1]
        if not 0 <= intf < len(interfaces) or not 0 <= alt < len(interfaces[intf]):
            raise IndexError("interface index out of range")
        endpoints = interfaces[intf][alt][1]
        if not 0 <= ep < len(endpoints):
            raise IndexError("endpoint index out of range")
        descriptor: SimpleNamespace = endpoints[ep]
        return descriptor

    # --- pyusb backend: handles ------------------------------------------------------------

    def _alive(self, handle: _Handle) -> _Link:
        if handle.closed:
            raise usb.core.USBError("Invalid handle (closed)", -2, errno.EINVAL)
        if handle.generation != handle.link.generation:
            raise _no_device(str(handle.ref))
        return handle.link

    def open_device(self, dev: RemoteDevice) -> _Handle:
        """A handle; the device is imported by its first transfer or claim, not here."""
        link = self._link(dev)
        return _Handle(dev, link, link.generation)

    def close_device(self, dev_handle: _Handle) -> None:
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
                    self._drop(link, broken=False)  # the server frees the device for other hosts

    def _setup_out(self, handle: _Handle, request: tuple[int, int, int, int], timeout_ms: int, what: str) -> None:
        setup = usbip_core.Setup(*request, 0).pack()
        self._transfer(handle, usbip_core.Urb(direction=usbip_core.OUT, ep=0, setup=setup, length=0),
                       timeout_ms, what)

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        self._setup_out(dev_handle, (0x00, _SET_CONFIGURATION, config_value, 0), 0, "SET_CONFIGURATION")
        dev_handle.configuration = config_value

    def get_configuration(self, dev_handle: _Handle) -> int:
        if dev_handle.configuration is None:
            setup = usbip_core.Setup(0x80, _GET_CONFIGURATION, 0, 0, 1).pack()
            done = self._transfer(dev_handle, usbip_core.Urb(direction=usbip_core.IN, ep=0, setup=setup, length=1),
                                  0, "GET_CONFIGURATION")
            dev_handle.configuration = done.buffer[0] if done.actual else 0
        return dev_handle.configuration

    def set_interface_altsetting(self, dev_handle: _Handle, intf: int, altsetting: int) -> None:
        self._setup_out(dev_handle, (0x01, _SET_INTERFACE, altsetting, intf), 0, "SET_INTERFACE")

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        """Claiming imports the device (USB/IP import is exclusive: busy if another host has it)."""
        link = self._alive(dev_handle)
        deadline = time.monotonic() + self.connect_timeout
        if not link.lock.acquire(timeout=self.connect_timeout):
            raise _timed_out(f"claiming {dev_handle.ref}: the connection stayed busy")
        try:
            if dev_handle.generation != link.generation:
                raise _no_device(str(dev_handle.ref))
            holder = link.claims.get(intf)
            if holder is not None and holder is not dev_handle:
                raise _busy(f"interface {intf} of {dev_handle.ref} is claimed")
            self._import(link, dev_handle.ref, deadline)
            if not dev_handle.holds_import:
                dev_handle.holds_import = True
                link.users += 1
            link.claims[intf] = dev_handle
            dev_handle.claimed.add(intf)
        finally:
            link.lock.release()

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        link = dev_handle.link
        with link.lock:
            dev_handle.claimed.discard(intf)
            if link.claims.get(intf) is dev_handle:
                del link.claims[intf]

    def clear_halt(self, dev_handle: _Handle, ep: int) -> None:
        self._setup_out(dev_handle, (0x02, _CLEAR_FEATURE, 0, ep), 0, "CLEAR_FEATURE(ENDPOINT_HALT)")

    def reset_device(self, dev_handle: _Handle) -> None:
        """USB/IP has no reset request: import again (the server resets the device's pipes)."""
        link = self._alive(dev_handle)
        with link.lock:
            self._drop(link, broken=False)

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        return False

    def detach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        return None

    def attach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        return None

    # --- pyusb backend: transfers ----------------------------------------------------------

    def ctrl_transfer(self, dev_handle: _Handle, bmRequestType: int, bRequest: int, wValue: int,
                      wIndex: int, data: Any, timeout: int) -> int:
        link = self._alive(dev_handle)
        is_in = bool(bmRequestType & 0x80)
        if is_in and bmRequestType == 0x80 and bRequest == _GET_DESCRIPTOR:
            blob = self._cached_descriptor(link, dev_handle.ref, wValue, wIndex)
            if blob is not None:
                count = min(len(blob), len(data))
                data[:count] = type(data)(data.typecode, blob[:count])
                return count
        length = len(data) if is_in else len(data) * data.itemsize
        setup = usbip_core.Setup(bmRequestType, bRequest, wValue, wIndex, length).pack()
        urb = usbip_core.Urb(direction=usbip_core.IN if is_in else usbip_core.OUT, ep=0, setup=setup,
                             length=length, buffer=b"" if is_in else bytes(data))
        done = self._transfer(dev_handle, urb, timeout, f"control {bRequest:#x}")
        if not is_in:
            return int(done.actual)
        received = bytes(done.buffer[:done.actual])
        count = min(len(received), len(data))
        data[:count] = type(data)(data.typecode, received[:count])
        if bRequest == _GET_DESCRIPTOR and bmRequestType == 0x80 and wValue >> 8 == _DT_STRING:
            described = link.descriptors
            if described is not None and described.identity == dev_handle.ref.identity:
                described.strings[(wValue & 0xFF, wIndex)] = received
        return count

    def _cached_descriptor(self, link: _Link, ref: RemoteDevice, wValue: int, wIndex: int) -> bytes | None:
        described = link.descriptors
        if described is None or described.identity != ref.identity:
            return None
        kind, index = wValue >> 8, wValue & 0xFF
        if kind == _DT_DEVICE:
            return described.device
        if kind == _DT_CONFIG and index < len(described.configs):
            return described.configs[index]
        if kind == _DT_STRING:
            return described.strings.get((index, wIndex if index else 0))
        return None

    def bulk_write(self, dev_handle: _Handle, ep: int, intf: int, data: Any, timeout: int) -> int:
        raw = bytes(data)
        urb = usbip_core.Urb(direction=usbip_core.OUT, ep=ep & 0x0F, length=len(raw), buffer=raw)
        return int(self._transfer(dev_handle, urb, timeout, f"bulk OUT {ep:#04x}").actual)

    def bulk_read(self, dev_handle: _Handle, ep: int, intf: int, buff: Any, timeout: int) -> int:
        urb = usbip_core.Urb(direction=usbip_core.IN, ep=ep & 0x0F, length=len(buff))
        done = self._transfer(dev_handle, urb, timeout, f"bulk IN {ep:#04x}")
        received = bytes(done.buffer[:done.actual])
        count = min(len(received), len(buff))
        buff[:count] = type(buff)(buff.typecode, received[:count])
        return count

    def intr_write(self, dev_handle: _Handle, ep: int, intf: int, data: Any, timeout: int) -> int:
        raw = bytes(data)
        urb = usbip_core.Urb(direction=usbip_core.OUT, ep=ep & 0x0F, length=len(raw), buffer=raw, interval=1)
        return int(self._transfer(dev_handle, urb, timeout, f"interrupt OUT {ep:#04x}").actual)

    def intr_read(self, dev_handle: _Handle, ep: int, intf: int, buff: Any, timeout: int) -> int:
        urb = usbip_core.Urb(direction=usbip_core.IN, ep=ep & 0x0F, length=len(buff), interval=1)
        done = self._transfer(dev_handle, urb, timeout, f"interrupt IN {ep:#04x}")
        received = bytes(done.buffer[:done.actual])
        count = min(len(received), len(buff))
        buff[:count] = type(buff)(buff.typecode, received[:count])
        return count

    def close(self) -> None:
        """Close every connection (handles still open become dead)."""
        with self._links_lock:
            links = list(self._links.values())
        for link in links:
            with link.lock:
                self._drop(link, broken=True)
