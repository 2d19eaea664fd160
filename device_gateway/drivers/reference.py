"""Drivers for the reference devices over pyusb: the product's own protocol, not a vendor's.

Find by vendor/product id and serial string, claim the interface, talk frames over the bulk
endpoints. A lost or garbled reply is retried only for commands the protocol marks retryable.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from typing import Any, ClassVar, TypeVar

import usb.core
import usb.util
from pydantic import BaseModel, ValidationError

from device_gateway.drivers import locate
from device_gateway.drivers.base import DeviceStatus
from device_gateway.drivers.errors import status_error, usb_errors
from device_gateway.protocol import (
    MAX_FRAME_SIZE,
    Command,
    FrameDecoder,
    MessageAssembler,
    Status,
    encode_message,
    is_retryable,
)
from device_gateway.protocol.usb_ids import INTERFACE, PRODUCT_IDS, VENDOR_ID
from shared.errors import ClearCardError, ErrorCode
from shared.messages.device import (
    Challenge,
    DeviceInfo,
    InvoicePage,
    OfflineUpload,
    PeriodHeader,
    ReportReply,
    WritebackPackage,
    WritebackReply,
)

M = TypeVar("M", bound=BaseModel)
ATTEMPTS_RETRYABLE = 3
DEFAULT_TIMEOUT_S = 10.0  # used only when no deadline was set


class _Garbled(Exception):
    """The reply could not be read (not JSON); worth another try for retryable commands."""


class ReferenceDriver:
    """A reference-protocol device of one family, reached through any pyusb backend."""

    family: ClassVar[str] = ""
    vendor_id: ClassVar[int] = VENDOR_ID
    product_id: ClassVar[int] = 0
    needs_clock_block: ClassVar[bool] = False

    def __init__(self, backend: Any, device_id: str) -> None:
        self._backend = backend
        self.device_id = device_id
        self._dev: Any = None
        self._ep_out: Any = None
        self._ep_in: Any = None
        self._sequence = 0
        self._decoder = FrameDecoder()
        self._deadline = math.inf
        self._last: Any = None  # the pyusb device this driver last opened (reopened first)

    @property
    def is_open(self) -> bool:
        return self._dev is not None

    def set_deadline(self, deadline: float) -> None:
        self._deadline = deadline

    def _timeout_ms(self) -> int:
        deadline = self._deadline if math.isfinite(self._deadline) else time.monotonic() + DEFAULT_TIMEOUT_S
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ClearCardError(ErrorCode.TIMEOUT, f"device {self.device_id}: the command's time ran out")
        return max(1, int(remaining * 1000))

    # --- session ---------------------------------------------------------------------------

    def _is_ours(self, dev: Any) -> bool:
        try:
            return bool(usb.util.get_string(dev, dev.iSerialNumber) == self.device_id)
        except (usb.core.USBError, ValueError):
            return False  # a device that cannot tell its serial is not the one we want
        finally:
            usb.util.dispose_resources(dev)

    def _find(self) -> Any:
        """The device where enumeration last saw it (serial checked), else a search by serial."""
        known = self._last or locate.take(self._backend, self.device_id)
        if known is not None and (known.idVendor, known.idProduct) == (self.vendor_id, self.product_id) \
                and self._is_ours(known):
            return known
        self._last = usb.core.find(backend=self._backend, idVendor=self.vendor_id,
                                   idProduct=self.product_id, custom_match=self._is_ours)
        return self._last

    def open(self) -> None:
        """Find the device by ids and serial, configure it and claim its interface."""
        with usb_errors(self.device_id):
            dev = self._find()
            if dev is None:
                raise ClearCardError(ErrorCode.DEVICE_OFFLINE,
                                     f"device {self.device_id} is not connected")
            self._detach_kernel_driver(dev)
            dev.set_configuration()
            usb.util.claim_interface(dev, INTERFACE)
            interface = dev.get_active_configuration()[(INTERFACE, 0)]
            self._ep_out = usb.util.find_descriptor(
                interface, custom_match=lambda e: usb.util.endpoint_direction(e.bEndpointAddress)
                == usb.util.ENDPOINT_OUT)
            self._ep_in = usb.util.find_descriptor(
                interface, custom_match=lambda e: usb.util.endpoint_direction(e.bEndpointAddress)
                == usb.util.ENDPOINT_IN)
        if self._ep_out is None or self._ep_in is None:
            usb.util.dispose_resources(dev)
            raise ClearCardError(ErrorCode.INTERNAL, f"device {self.device_id} has no bulk endpoints")
        self._dev = dev
        self._decoder = FrameDecoder()

    @staticmethod
    def _detach_kernel_driver(dev: Any) -> None:
        """On a real host an OS driver (HID, storage) may hold the interface: take it over.

        Backends without kernel drivers (the emulator, USB/IP) do not implement the call.
        """
        with contextlib.suppress(NotImplementedError, usb.core.USBError):
            if dev.is_kernel_driver_active(INTERFACE):
                dev.detach_kernel_driver(INTERFACE)

    def close(self) -> None:
        """Release the interface and the handle; never raises (the device may be gone)."""
        dev, self._dev = self._dev, None
        if dev is None:
            return
        with contextlib.suppress(usb.core.USBError):  # already gone: nothing to release
            usb.util.release_interface(dev, INTERFACE)
        usb.util.dispose_resources(dev)

    # --- one exchange ----------------------------------------------------------------------

    def _exchange(self, command: Command, request: dict[str, Any]) -> dict[str, Any]:
        if self._dev is None:
            raise ClearCardError(ErrorCode.DEVICE_OFFLINE, f"device {self.device_id} is not open")
        attempts = ATTEMPTS_RETRYABLE if is_retryable(command) else 1
        for attempt in range(1, attempts + 1):
            try:
                return self._once(command, request)
            except _Garbled as exc:
                if attempt == attempts:
                    raise ClearCardError(ErrorCode.INTERNAL,
                                         f"device {self.device_id} answered garbage: {exc}") from None
            except ClearCardError as exc:
                if exc.code is not ErrorCode.TIMEOUT or attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def _once(self, command: Command, request: dict[str, Any]) -> dict[str, Any]:
        self._sequence = (self._sequence + 1) & 0xFFFF
        sequence = self._sequence
        data = encode_message(sequence, command, json.dumps(request, separators=(",", ":")).encode())
        assembler = MessageAssembler()
        with usb_errors(self.device_id):
            self._dev.write(self._ep_out, data, self._timeout_ms())
            while True:
                timeout = self._timeout_ms()
                try:
                    chunk = bytes(self._dev.read(self._ep_in, MAX_FRAME_SIZE, timeout))
                except usb.core.USBTimeoutError:
                    if not self._decoder.buffered:
                        raise
                    frames = self._decoder.resync()  # a partial frame that never completed
                else:
                    frames = self._decoder.feed(chunk)
                for frame in frames:
                    if not frame.is_response or (frame.sequence, frame.command) != (sequence, command):
                        continue  # a late answer to an earlier, timed-out command
                    message = assembler.add(frame)
                    if message is not None:
                        return self._result(message.status, message.payload)

    def _result(self, status: int, payload: bytes) -> dict[str, Any]:
        try:
            body = json.loads(payload or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise _Garbled(str(exc)) from None
        if not isinstance(body, dict):
            raise _Garbled("reply is not a JSON object")
        if status != Status.OK:
            raise status_error(status, body, self.device_id)
        return body

    def _model(self, model: type[M], body: dict[str, Any]) -> M:
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            raise ClearCardError(
                ErrorCode.INTERNAL,
                f"device {self.device_id} answered an unreadable {model.__name__}: {exc.errors()[0]['msg']}",
            ) from None

    # --- operations ------------------------------------------------------------------------

    def info(self) -> DeviceStatus:
        """INFO: the device's description, clock and monitoring data."""
        body = self._exchange(Command.INFO, {})
        return DeviceStatus(self._model(DeviceInfo, body), bool(body.get("clock_abnormal")),
                            bool(body.get("locked")))

    def verify_pin(self, pin: str) -> int:
        """VERIFY_PIN (never retried); returns the tries left."""
        body = self._exchange(Command.VERIFY_PIN, {"pin": pin})
        return int(body.get("pin_tries_left", 0))

    def read_period(self, period: str, invoice_types: list[str]) -> PeriodHeader:
        """READ_PERIOD: the period's summaries and invoice counts (the invoices come in pages)."""
        body = self._exchange(Command.READ_PERIOD, {"period": period, "invoice_types": invoice_types})
        return self._model(PeriodHeader, body)

    def read_invoices(self, period: str, invoice_type: str, cursor: str | None, limit: int) -> InvoicePage:
        """READ_INVOICES: one page of one type's invoices, from `cursor` (None: the first)."""
        body = self._exchange(Command.READ_INVOICES, {"period": period, "invoice_type": invoice_type,
                                                      "cursor": cursor, "limit": limit})
        return self._model(InvoicePage, body)

    def upload_offline(self, period: str) -> OfflineUpload:
        """UPLOAD_OFFLINE: every offline invoice of the period, now marked uploaded."""
        return self._model(OfflineUpload, self._exchange(Command.UPLOAD_OFFLINE, {"period": period}))

    def report(self, period: str, invoice_types: list[str]) -> ReportReply:
        """REPORT (never retried): signed summaries; types already reported keep theirs."""
        body = self._exchange(Command.REPORT, {"period": period, "invoice_types": invoice_types})
        return self._model(ReportReply, body)

    def challenge(self) -> Challenge:
        """CHALLENGE: a fresh random value for the next write-back package."""
        return self._model(Challenge, self._exchange(Command.CHALLENGE, {}))

    def write_clock(self, clock_block: str) -> str:
        """WRITE_CLOCK (never retried): calibrate the clock; returns the device clock."""
        return str(self._exchange(Command.WRITE_CLOCK, {"clock_block": clock_block}).get("clock"))

    def writeback(self, package: WritebackPackage) -> WritebackReply:
        """WRITEBACK (never retried), after WRITE_CLOCK for families that need it."""
        if self.needs_clock_block:
            if not package.clock_block:
                raise ClearCardError(ErrorCode.WRITEBACK_REJECTED,
                                     f"a {self.family} needs a clock calibration block in the package")
            self.write_clock(package.clock_block)
        body = self._exchange(Command.WRITEBACK, package.model_dump(mode="json"))
        return self._model(WritebackReply, {"device_id": self.device_id, **body})


class UKeyDriver(ReferenceDriver):
    """Tax UKey (税务UKey), reference protocol."""

    family = "ukey"
    product_id = PRODUCT_IDS["ukey"]


class GoldenTaxDiskDriver(ReferenceDriver):
    """Golden tax disk (金税盘), reference protocol."""

    family = "golden_tax_disk"
    product_id = PRODUCT_IDS["golden_tax_disk"]


class TaxControlDiskDriver(ReferenceDriver):
    """Tax control disk (税控盘), reference protocol: a clock block precedes every clear block."""

    family = "tax_control_disk"
    product_id = PRODUCT_IDS["tax_control_disk"]
    needs_clock_block = True
