"""One emulated device as a USB/IP server exports it: its `usbip` device, import and answers.

The device is a `usbip.device.USBDevice` with the reference protocol's identity (vendor-specific
interface 0, bulk OUT 0x01 and bulk IN 0x81, 512-byte packets, high speed, serial string =
device id). Its logic is the emulator's own: a bulk OUT is written to an emulator handle, and the
answer goes back to the server to be queued on bulk IN once the device's latency has passed.
Import is exclusive: a second importer, or a device held by another program, is refused busy.
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import usb.core
from usbip import core as usbip_core  # type: ignore[import-untyped]
from usbip.device import In, Out, USBDevice  # type: ignore[import-untyped]
from usbip.function import Interface  # type: ignore[import-untyped]

from device_gateway.emulator.backend import DeviceRef, EmulatedBackend
from device_gateway.protocol.usb_ids import (
    EP_IN,
    EP_OUT,
    INTERFACE,
    MANUFACTURER,
    MAX_PACKET,
    PRODUCT_IDS,
    PRODUCT_NAMES,
    VENDOR_ID,
)
from device_gateway.transports.usbip import wire

IMPORT_GRACE_S = 1.0  # a host re-importing right after closing waits this long for its old connection
Deliver = Callable[["Export", int, float, bytes], None]  # (export, epoch, ready_at, answer)


class Gone(Exception):
    """The emulated device was unplugged: drop the connection, as usbipd does on removal."""


class _ReferenceInterface(Interface):
    """Interface 0 of a reference device: vendor class, bulk OUT 0x01 then bulk IN 0x81."""

    bInterfaceClass = 0xFF
    out_ep = Out(EP_OUT, "bulk", mps=MAX_PACKET)
    in_ep = In(EP_IN & 0x0F, "bulk", mps=MAX_PACKET)

    def __init__(self, export: Export) -> None:
        super().__init__()
        self.export = export

    def on_out(self, ep: Any, data: bytes) -> None:
        self.export.on_out(bytes(data))

    def on_reset(self) -> None:
        self.export.on_reset()


@dataclass(eq=False)
class Export:
    """One emulated device as the server exports it."""

    backend: EmulatedBackend
    ref: DeviceRef
    deliver: Deliver  # queues an answer until the device's latency has passed
    usb: Any = None  # usbip.device.USBDevice
    interface: Any = None
    handle: Any = None  # the emulator handle of the connection that imported the device
    epoch: int = 0  # bumped on every import and reset: late answers for an older one are dropped
    cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.usb = USBDevice(VENDOR_ID, PRODUCT_IDS[self.ref.family], manufacturer=MANUFACTURER,
                             product=PRODUCT_NAMES[self.ref.family], serial=self.ref.device_id)
        self.usb.set_speed(usbip_core.SPEED_HIGH)
        self.interface = self.usb.add(_ReferenceInterface(self))
        self.usb.busid, self.usb.busnum, self.usb.devnum = f"1-{self.ref.port}", 1, self.ref.port + 1

    def attach(self) -> int:
        """Import by a new connection: OK, busy (imported or held) or no such device."""
        deadline = time.monotonic() + IMPORT_GRACE_S
        with self.cond:
            # a host that just dropped its connection (after a timeout) imports again at once
            while self.handle is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return wire.ST_DEV_BUSY
                self.cond.wait(remaining)
            try:
                handle = self.backend.open_device(self.ref)
            except usb.core.USBError:
                return wire.ST_NODEV
            try:
                self.backend.claim_interface(handle, INTERFACE)
            except usb.core.USBError as exc:
                self.backend.close_device(handle)
                return wire.ST_DEV_BUSY if exc.errno == errno.EBUSY else wire.ST_NODEV
            self.handle = handle
        self.usb.reset_io()  # a fresh import sees a bus reset: nothing left over on the pipes
        return wire.ST_OK

    def detach(self) -> None:
        with self.cond:
            handle, self.handle = self.handle, None
            self.epoch += 1
            self.cond.notify_all()
        if handle is not None:
            self.backend.close_device(handle)

    def on_reset(self) -> None:
        with self.cond:
            self.epoch += 1
            handle = self.handle
        if handle is not None:
            with contextlib.suppress(usb.core.USBError):
                self.backend.reset_device(handle)

    def on_out(self, data: bytes) -> None:
        handle = self.handle
        if handle is None:
            raise Gone
        try:
            self.backend.bulk_write(handle, EP_OUT, INTERFACE, data, 0)
            answer, ready_at = self.backend.take_response(handle)
        except usb.core.USBError as exc:
            if exc.errno == errno.ENODEV:
                raise Gone from None
            raise
        if answer:
            self.deliver(self, self.epoch, ready_at, answer)

    def write_answer(self, epoch: int, data: bytes) -> None:
        if epoch == self.epoch:
            self.interface.in_ep.write(data)
