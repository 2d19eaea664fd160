"""A pure-Python pyusb backend (`usb.backend.IBackend`) exposing the emulated devices.

pyusb's real code path runs on it: `usb.core.find`, string descriptors, `set_configuration`,
`claim_interface`, `dev.write`/`dev.read`. Requests arrive as protocol frames on bulk OUT
0x01; the device runs them when the last fragment is written and answers on bulk IN 0x81
after its `latency_ms`. Errors are raised the way libusb does (ENODEV, ETIMEDOUT, EBUSY, EPIPE).
Calls block (latency is `time.sleep`): callers run them in worker threads.

Before each command the device's state file is checked (mtime, size, inode): when another
process (a gateway replica or an emulated cabinet sharing the data dir) saved it since this
process last loaded or saved it, it is loaded again, so no command acts on a stale copy.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
import usb.backend
import usb.core

from device_gateway.emulator import descriptors as d
from device_gateway.emulator.firmware import Outcome, run_command
from device_gateway.emulator.state import DeviceState
from device_gateway.emulator.store import EmulatorStateError, EmulatorStore
from device_gateway.protocol import FrameDecoder, Message, MessageAssembler, Status, encode_message
from device_gateway.protocol.usb_ids import EP_IN, EP_OUT, MANUFACTURER, PRODUCT_NAMES
from device_gateway.transports.usb_errors import busy, no_device, stall, timed_out
from shared.tax_calendar import DEFAULT, TaxCalendar

log = structlog.get_logger("clearcard.emulator")



@dataclass(frozen=True)
class DeviceRef:
    """What enumeration yields for one emulated device (opaque to pyusb)."""

    device_id: str
    family: str
    port: int


@dataclass
class _Handle:
    ref: DeviceRef
    decoder: FrameDecoder = field(default_factory=FrameDecoder)
    assembler: MessageAssembler = field(default_factory=MessageAssembler)
    pending: bytearray = field(default_factory=bytearray)  # response bytes waiting on bulk IN
    ready_at: float = 0.0  # monotonic time the pending response becomes readable
    configuration: int = d.CONFIG_VALUE
    claimed: set[int] = field(default_factory=set)
    closed: bool = False


@dataclass
class _Device:
    ref: DeviceRef
    state: DeviceState
    stamp: tuple[int, int, int] | None = None  # the state file's version `state` was loaded from
    lock: threading.Lock = field(default_factory=threading.Lock)
    handles: list[_Handle] = field(default_factory=list)


class EmulatedBackend(usb.backend.IBackend):
    """The emulated devices of one gateway as a pyusb backend."""

    def __init__(
        self,
        store: EmulatorStore,
        states: Iterable[DeviceState],
        *,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        random_bytes: Callable[[int], bytes] = os.urandom,
        calendar: TaxCalendar = DEFAULT,
    ) -> None:
        super().__init__()
        self.store = store
        self._calendar = calendar
        self._wall_clock = wall_clock
        self._random_bytes = random_bytes
        self._devices: dict[str, _Device] = {}
        for port, state in enumerate(states, start=1):
            ref = DeviceRef(state.device_id, state.family, port)
            self._devices[state.device_id] = _Device(ref, state, store.stamp(state.device_id))

    # --- enumeration and descriptors -------------------------------------------------------

    def device_refs(self) -> list[DeviceRef]:
        """Every emulated device, plugged or not (the USB/IP server exports from this)."""
        return [dev.ref for dev in self._devices.values()]

    def enumerate_devices(self) -> list[DeviceRef]:
        return [dev.ref for dev in self._devices.values() if self.store.is_plugged(dev.ref.device_id)]

    def get_parent(self, dev: DeviceRef) -> None:
        return None

    def get_device_descriptor(self, dev: DeviceRef) -> d.DeviceDescriptor:
        return d.device_descriptor(dev.family, dev.port)

    def get_configuration_descriptor(self, dev: DeviceRef, config: int) -> d.ConfigurationDescriptor:
        if config != 0:
            raise IndexError("configuration index out of range")
        return d.CONFIGURATION

    def get_interface_descriptor(
        self, dev: DeviceRef, intf: int, alt: int, config: int
    ) -> d.InterfaceDescriptor:
        if (config, intf, alt) != (0, 0, 0):
            raise IndexError("interface index out of range")
        return d.INTERFACE_DESCRIPTOR

    def get_endpoint_descriptor(
        self, dev: DeviceRef, ep: int, intf: int, alt: int, config: int
    ) -> d.EndpointDescriptor:
        if (config, intf, alt) != (0, 0, 0) or not 0 <= ep < len(d.ENDPOINTS):
            raise IndexError("endpoint index out of range")
        return d.ENDPOINTS[ep]

    # --- handles ---------------------------------------------------------------------------

    def _device(self, ref: DeviceRef) -> _Device:
        if not self.store.is_plugged(ref.device_id):
            raise no_device(ref.device_id)
        return self._devices[ref.device_id]

    def _alive(self, handle: _Handle) -> _Device:
        if handle.closed:
            raise usb.core.USBError("Invalid handle (closed)", -2, errno.EINVAL)
        return self._device(handle.ref)

    def open_device(self, dev: DeviceRef) -> _Handle:
        device = self._device(dev)
        handle = _Handle(dev)
        with device.lock:
            device.handles.append(handle)
        return handle

    def close_device(self, dev_handle: _Handle) -> None:
        device = self._devices[dev_handle.ref.device_id]
        with device.lock:
            dev_handle.closed = True
            dev_handle.claimed.clear()
            if dev_handle in device.handles:
                device.handles.remove(dev_handle)

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        self._alive(dev_handle)
        if config_value not in (0, d.CONFIG_VALUE):
            raise stall(f"no configuration {config_value}")
        dev_handle.configuration = config_value

    def get_configuration(self, dev_handle: _Handle) -> int:
        self._alive(dev_handle)
        return dev_handle.configuration

    def set_interface_altsetting(self, dev_handle: _Handle, intf: int, altsetting: int) -> None:
        self._alive(dev_handle)
        if (intf, altsetting) != (0, 0):
            raise stall("no such alternate setting")

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        device = self._alive(dev_handle)
        if self.store.is_held(dev_handle.ref.device_id):
            raise busy("the interface is claimed")
        with device.lock:
            for other in device.handles:
                if other is not dev_handle and intf in other.claimed:
                    # another program (or gateway) holds the device: libusb answers busy
                    raise busy("the interface is claimed")
            dev_handle.claimed.add(intf)

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        dev_handle.claimed.discard(intf)

    def clear_halt(self, dev_handle: _Handle, ep: int) -> None:
        self._alive(dev_handle)

    def reset_device(self, dev_handle: _Handle) -> None:
        device = self._alive(dev_handle)
        with device.lock:
            dev_handle.pending.clear()
            dev_handle.decoder = FrameDecoder()
            dev_handle.assembler = MessageAssembler()

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        return False

    def detach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        return None

    def attach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        return None

    # --- transfers -------------------------------------------------------------------------

    def ctrl_transfer(
        self, dev_handle: _Handle, bmRequestType: int, bRequest: int, wValue: int, wIndex: int,
        data: Any, timeout: int,
    ) -> int:
        self._alive(dev_handle)
        if bRequest != 0x06 or not bmRequestType & 0x80:
            raise stall(f"unsupported control request {bRequest:#x}")  # only GET_DESCRIPTOR
        kind, index = wValue >> 8, wValue & 0xFF
        ref = dev_handle.ref
        if kind == d.DESC_DEVICE:
            blob = d.device_descriptor(ref.family, ref.port).to_bytes()
        elif kind == d.DESC_CONFIG and index == 0:
            blob = d.configuration_bytes()
        elif kind == d.DESC_STRING:
            strings = {d.STRING_MANUFACTURER: MANUFACTURER, d.STRING_PRODUCT: PRODUCT_NAMES[ref.family],
                       d.STRING_SERIAL: ref.device_id}
            if index == 0:
                blob = d.langid_descriptor()
            elif index in strings:
                blob = d.string_descriptor(strings[index])
            else:
                raise stall(f"no string {index}")
        else:
            raise stall(f"no descriptor {wValue:#06x}")
        count = min(len(blob), len(data))
        data[:count] = type(data)(data.typecode, blob[:count])
        return count

    def bulk_write(self, dev_handle: _Handle, ep: int, intf: int, data: Any, timeout: int) -> int:
        device = self._alive(dev_handle)
        if ep != EP_OUT:
            raise stall(f"endpoint {ep:#x} is not bulk OUT")
        raw = bytes(data)
        with device.lock:
            for frame in dev_handle.decoder.feed(raw):
                if frame.is_response:
                    continue  # a host never sends responses; ignore, as firmware would
                message = dev_handle.assembler.add(frame)
                if message is not None:
                    dev_handle.pending += self._execute(device, message)
                    dev_handle.ready_at = time.monotonic() + device.state.latency_ms / 1000
        return len(raw)

    def bulk_read(self, dev_handle: _Handle, ep: int, intf: int, buff: Any, timeout: int) -> int:
        device = self._alive(dev_handle)
        if ep != EP_IN:
            raise stall(f"endpoint {ep:#x} is not bulk IN")
        wait = dev_handle.ready_at - time.monotonic()
        if not dev_handle.pending or wait > timeout / 1000:
            # nothing to read within the timeout; waiting out the full timeout only when a
            # reply is actually being prepared keeps a confused host from hanging
            if dev_handle.pending:
                time.sleep(timeout / 1000)
            raise timed_out("no answer waiting")
        if wait > 0:
            time.sleep(wait)
        device = self._alive(dev_handle)  # it may have been pulled out meanwhile
        with device.lock:
            count = min(len(buff), len(dev_handle.pending))
            buff[:count] = type(buff)(buff.typecode, bytes(dev_handle.pending[:count]))
            del dev_handle.pending[:count]
        return count

    def take_response(self, dev_handle: _Handle) -> tuple[bytes, float]:
        """Everything queued on bulk IN and the monotonic time it becomes readable; clears it.

        For servers that deliver the answer themselves (device_gateway/emulator/usbip_server.py).
        """
        device = self._alive(dev_handle)
        with device.lock:
            data = bytes(dev_handle.pending)
            dev_handle.pending.clear()
            return data, dev_handle.ready_at

    def _refresh(self, device: _Device) -> None:
        """Load the state file again if another process saved it since we loaded or saved it."""
        device_id = device.ref.device_id
        stamp = self.store.stamp(device_id)
        if stamp is None or stamp == device.stamp:
            return
        try:
            state = self.store.load(device_id)
        except (EmulatorStateError, OSError) as exc:
            log.error("emulator state changed on disk but cannot be read; keeping the loaded copy",
                      device_id=device_id, error=str(exc))
            return
        if state is not None:
            device.state = state
            device.stamp = stamp
            log.info("emulator state reloaded (saved by another process)", device_id=device_id)

    def _execute(self, device: _Device, message: Message) -> bytes:
        """Run one request against the device's firmware; persist before answering."""
        self._refresh(device)
        try:
            request = json.loads(message.payload or b"{}")
            if not isinstance(request, dict):
                raise ValueError("request payload must be a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            status, body = Status.BAD_REQUEST, {"message": f"request is not a JSON object: {exc}"}
        else:
            if self.store.is_held(device.ref.device_id):
                # another program (the invoicing software) is using the device right now
                outcome = Outcome(Status.BUSY, {"message": "the device is in use by another program"})
            else:
                outcome = run_command(device.state, message.command, request, self._wall_clock(),
                                      self._random_bytes, self._calendar)
            status, body = outcome.status, outcome.body
            if outcome.changed:
                try:
                    self.store.save(device.state)
                    device.stamp = self.store.stamp(device.ref.device_id)
                except OSError as exc:
                    # the change did not reach the device's memory: forget it, answer a fault
                    log.error("emulator state not saved", device_id=device.ref.device_id, error=str(exc))
                    device.state = self.store.load(device.ref.device_id) or device.state
                    device.stamp = self.store.stamp(device.ref.device_id)
                    status, body = Status.FAULT, {"message": "device memory write failed"}
        payload = json.dumps(body, separators=(",", ":")).encode()
        return encode_message(message.sequence, message.command, payload, status=status, response=True)

    def state_of(self, device_id: str) -> DeviceState:
        """The live state of a device (tests and the admin view of a running emulator)."""
        return self._devices[device_id].state
