"""Transfers on a handle: the deadline, the link's lock, and control requests answered from cache.

pyusb's timeout 0 means "no timeout"; here it still comes back after the backend's maximum, so
no transfer waits on a cabinet for ever. A GET_DESCRIPTOR the descriptors already hold is
answered without a round trip (scans read strings on every pass).
"""

from __future__ import annotations

import time
from typing import Any

from usbip import core as usbip_core  # type: ignore[import-untyped]

from device_gateway.transports.usb_errors import no_device, timed_out
from device_gateway.transports.usbip.descriptors import DT_STRING, GET_DESCRIPTOR
from device_gateway.transports.usbip.links import Connector, Handle


def deadline(timeout_ms: int, max_timeout: float) -> float:
    seconds = timeout_ms / 1000 if timeout_ms and timeout_ms > 0 else max_timeout
    return time.monotonic() + min(seconds, max_timeout)


def transfer(connector: Connector, handle: Handle, urb: Any, until: float, what: str) -> Any:
    """Submit `urb` on the handle's link (importing the device if needed); the completed URB."""
    link = handle.alive()
    if not link.lock.acquire(timeout=max(0.0, until - time.monotonic())):
        raise timed_out(f"{what} on {handle.ref}: the connection stayed busy")
    try:
        if handle.generation != link.generation:
            raise no_device(str(handle.ref))
        if not handle.holds_import:
            handle.holds_import = True
            link.users += 1
        return connector.submit(link, handle.ref, urb, until, what)
    finally:
        link.lock.release()


def fill(buffer: Any, received: bytes) -> int:
    """Copy what came back into pyusb's array; how many bytes it took."""
    count = min(len(received), len(buffer))
    buffer[:count] = type(buffer)(buffer.typecode, received[:count])
    return count


def control(connector: Connector, handle: Handle, request: tuple[int, int, int, int], data: Any,
            until: float) -> int:
    """A control transfer (bmRequestType, bRequest, wValue, wIndex): bytes written or read."""
    link = handle.alive()
    request_type, b_request, w_value, w_index = request
    is_in = bool(request_type & 0x80)
    asks_descriptor = request_type == 0x80 and b_request == GET_DESCRIPTOR
    if asks_descriptor and link.descriptors is not None:
        blob = link.descriptors.cached(handle.ref, w_value, w_index)
        if blob is not None:
            return fill(data, blob)
    length = len(data) if is_in else len(data) * data.itemsize
    setup = usbip_core.Setup(*request, length).pack()
    urb = usbip_core.Urb(direction=usbip_core.IN if is_in else usbip_core.OUT, ep=0, setup=setup,
                         length=length, buffer=b"" if is_in else bytes(data))
    done = transfer(connector, handle, urb, until, f"control {b_request:#x}")
    if not is_in:
        return int(done.actual)
    received = bytes(done.buffer[:done.actual])
    if asks_descriptor and w_value >> 8 == DT_STRING:
        described = link.descriptors
        if described is not None and described.identity == handle.ref.identity:
            described.strings[(w_value & 0xFF, w_index)] = received
    return fill(data, received)


def endpoint_out(connector: Connector, handle: Handle, ep: int, data: Any, until: float, *,
                 interrupt: bool = False) -> int:
    """A bulk or interrupt OUT transfer: bytes written."""
    raw = bytes(data)
    urb = usbip_core.Urb(direction=usbip_core.OUT, ep=ep & 0x0F, length=len(raw), buffer=raw,
                         **({"interval": 1} if interrupt else {}))
    kind = "interrupt" if interrupt else "bulk"
    return int(transfer(connector, handle, urb, until, f"{kind} OUT {ep:#04x}").actual)


def endpoint_in(connector: Connector, handle: Handle, ep: int, buffer: Any, until: float, *,
                interrupt: bool = False) -> int:
    """A bulk or interrupt IN transfer into pyusb's array: bytes read."""
    urb = usbip_core.Urb(direction=usbip_core.IN, ep=ep & 0x0F, length=len(buffer),
                         **({"interval": 1} if interrupt else {}))
    kind = "interrupt" if interrupt else "bulk"
    done = transfer(connector, handle, urb, until, f"{kind} IN {ep:#04x}")
    return fill(buffer, bytes(done.buffer[:done.actual]))
