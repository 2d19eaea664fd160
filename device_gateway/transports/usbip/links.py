"""Connections to exported devices: the import a link holds, and URBs over it, one at a time.

A link is this host's way to one exported device. It imports the device on first use (a TCP
connection per import) and keeps the connection while any handle that used it is open. One
request is in flight per connection (the link's lock): usbip's host side is synchronous and has
no per-transfer timeout, so the socket timeout is set from each transfer's deadline; on expiry
the connection is dropped (its stream position is unknown) and the next transfer imports again.
A broken connection bumps the link's generation: handles opened before it are dead, as a libusb
handle of an unplugged device is.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import usb.core
from usbip import core as usbip_core  # type: ignore[import-untyped]
from usbip import protocol

from device_gateway.transports.usb_errors import busy, closed_handle, no_device, timed_out, urb_error
from device_gateway.transports.usbip import wire

if TYPE_CHECKING:
    from device_gateway.transports.usbip.descriptors import Descriptors


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


@dataclass(eq=False)
class Link:
    """The import (connection) of one exported device and what was read through it."""

    lock: threading.Lock = field(default_factory=threading.Lock)  # one request in flight
    sock: socket.socket | None = None
    seqnum: int = 0
    devid: int = 0
    generation: int = 0  # bumped when the connection breaks: older handles are dead
    users: int = 0  # open handles that hold the import
    descriptors: Descriptors | None = None  # once read
    claims: dict[int, object] = field(default_factory=dict)  # interface -> claiming handle


@dataclass(eq=False)
class Handle:
    """A pyusb device handle: which link it uses, and the generation it was opened in."""

    ref: RemoteDevice
    link: Link
    generation: int
    holds_import: bool = False
    claimed: set[int] = field(default_factory=set)
    configuration: int | None = None
    closed: bool = False

    def alive(self) -> Link:
        """The handle's link; raises as libusb does for a closed handle or an unplugged device."""
        if self.closed:
            raise closed_handle()
        if self.generation != self.link.generation:
            raise no_device(str(self.ref))
        return self.link


@dataclass
class Connector:
    """Opens, imports and drops connections and submits URBs over them (caller holds link.lock)."""

    connect_timeout: float
    nodelay: bool = True  # False only to measure what Nagle costs (benchmarks/usbip_round_trips.py)

    def connect(self, server: tuple[str, int], timeout: float) -> socket.socket:
        sock = socket.create_connection(server, timeout=max(0.001, timeout))
        if self.nodelay:
            # each transfer is a small request and a small reply: Nagle plus delayed ACKs would
            # otherwise cap it near 25 round trips/s
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def import_device(self, link: Link, ref: RemoteDevice, deadline: float) -> socket.socket:
        """The link's connection, importing the device if it has none."""
        if link.sock is not None:
            return link.sock
        try:
            sock = self.connect(ref.server, min(self.connect_timeout, deadline - time.monotonic()))
        except TimeoutError:
            raise timed_out(f"connecting to {ref}") from None
        except OSError as exc:
            raise no_device(f"{ref}: {exc}") from None
        try:
            sock.settimeout(max(0.001, min(self.connect_timeout, deadline - time.monotonic())))
            status, info = wire.request_import(sock, ref.busid)
            if status == wire.ST_DEV_BUSY:
                raise busy(f"{ref} is imported by another host or in use on the server")
            if status != wire.ST_OK or info is None:
                raise no_device(f"{ref}: import refused (status {status})")
        except usb.core.USBError:  # (an OSError too: keep it first)
            sock.close()
            raise
        except TimeoutError:
            sock.close()
            raise timed_out(f"importing {ref}") from None
        except OSError as exc:
            sock.close()
            raise no_device(f"{ref}: {exc}") from None
        if (info["busnum"], info["devnum"], info["idVendor"], info["idProduct"]) != ref.identity:
            sock.close()
            raise no_device(f"{ref}: another device is there now")
        link.sock, link.devid, link.seqnum = sock, (info["busnum"] << 16) | info["devnum"], 0
        return sock

    def drop(self, link: Link, *, broken: bool) -> None:
        """Close the link's connection; `broken` also kills the handles opened before."""
        sock, link.sock = link.sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        if broken:
            link.generation += 1
            link.claims.clear()

    def submit(self, link: Link, ref: RemoteDevice, urb: Any, deadline: float, what: str) -> Any:
        """One URB over the link's connection; returns the completed URB."""
        sock = self.import_device(link, ref, deadline)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise timed_out(what)
        link.seqnum = (link.seqnum + 1) & 0xFFFFFFFF
        urb.seqnum, urb.devid = link.seqnum, link.devid
        try:
            sock.settimeout(remaining)
            done = protocol.client_submit(sock, urb)
        except TimeoutError:
            # the stream may be mid-reply: drop it; the next transfer imports again
            self.drop(link, broken=False)
            raise timed_out(f"{what} on {ref}") from None
        except (OSError, usbip_core.USBError) as exc:
            self.drop(link, broken=True)
            raise no_device(f"{ref}: {exc}") from None
        if done.status != 0:
            if -done.status in (errno.ENODEV, errno.ESHUTDOWN):
                self.drop(link, broken=True)
            raise urb_error(done.status, f"{what} on {ref}")
        return done

    def control_in(self, link: Link, ref: RemoteDevice, request: tuple[int, int, int, int],
                   length: int, deadline: float) -> bytes:
        """A control IN transfer (bmRequestType, bRequest, wValue, wIndex) of up to `length` bytes."""
        setup = usbip_core.Setup(*request, length).pack()
        done = self.submit(link, ref, usbip_core.Urb(direction=usbip_core.IN, ep=0, setup=setup, length=length),
                           deadline, f"control {request[1]:#x}")
        return bytes(done.buffer[:done.actual])
