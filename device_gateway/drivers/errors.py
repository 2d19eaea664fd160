"""Translate device status codes and pyusb errors into the product's error codes, at the edge."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import usb.core

from device_gateway.protocol import Status
from shared.errors import PLAIN_WORDS, ClearCardError, ErrorCode

STATUS_ERRORS: dict[Status, ErrorCode] = {
    Status.BAD_REQUEST: ErrorCode.INVALID_REQUEST,
    Status.UNKNOWN_COMMAND: ErrorCode.INVALID_REQUEST,
    Status.PIN_INVALID: ErrorCode.DEVICE_PIN_INVALID,
    Status.PIN_LOCKED: ErrorCode.DEVICE_PIN_LOCKED,
    Status.DEVICE_LOCKED: ErrorCode.DEVICE_LOCKED,
    Status.CLOCK_ABNORMAL: ErrorCode.DEVICE_CLOCK_ABNORMAL,
    Status.OFFLINE_PENDING: ErrorCode.OFFLINE_INVOICES_PENDING,
    Status.NOT_IN_WINDOW: ErrorCode.NOT_IN_REPORTING_WINDOW,
    # the contract has no code of its own for "no summary reported": the write-back is refused
    Status.NOT_REPORTED: ErrorCode.WRITEBACK_REJECTED,
    Status.WRITEBACK_REJECTED: ErrorCode.WRITEBACK_REJECTED,
    Status.BUSY: ErrorCode.DEVICE_BUSY,
    Status.FAULT: ErrorCode.INTERNAL,
}

_OFFLINE_ERRNOS = {errno.ENODEV, errno.ENOENT, errno.EIO, errno.ESHUTDOWN}
_BUSY_ERRNOS = {errno.EBUSY, errno.EPIPE, errno.EACCES}
_LIBUSB_OFFLINE = {-4, -5, -1}  # NO_DEVICE, NOT_FOUND, IO
_LIBUSB_BUSY = {-6, -9, -3}  # BUSY, PIPE (stall), ACCESS


def status_error(status: int, body: dict[str, Any], device_id: str) -> ClearCardError:
    """The ClearCardError for a device's non-OK answer, keeping the device's own detail."""
    try:
        code = STATUS_ERRORS[Status(status)]
    except (ValueError, KeyError):
        code = ErrorCode.INTERNAL
    detail = body.get("message")
    words = PLAIN_WORDS[code]
    return ClearCardError(code, f"{words} (device {device_id}: {detail})" if detail else words)


def usb_error(exc: usb.core.USBError, device_id: str) -> ClearCardError:
    """Map a pyusb error: ENODEV -> DEVICE_OFFLINE, timeout -> TIMEOUT, EBUSY/stall -> DEVICE_BUSY."""
    number, backend_code = exc.errno, getattr(exc, "backend_error_code", None)
    if isinstance(exc, usb.core.USBTimeoutError) or number == errno.ETIMEDOUT or backend_code == -7:
        return ClearCardError(ErrorCode.TIMEOUT, f"device {device_id} did not answer in time")
    if number in _OFFLINE_ERRNOS or backend_code in _LIBUSB_OFFLINE:
        return ClearCardError(ErrorCode.DEVICE_OFFLINE,
                              f"{PLAIN_WORDS[ErrorCode.DEVICE_OFFLINE]} (device {device_id})")
    if number in _BUSY_ERRNOS or backend_code in _LIBUSB_BUSY:
        return ClearCardError(ErrorCode.DEVICE_BUSY,
                              f"{PLAIN_WORDS[ErrorCode.DEVICE_BUSY]} (device {device_id})")
    return ClearCardError(ErrorCode.INTERNAL, f"USB error on device {device_id}: {exc}")


@contextmanager
def usb_errors(device_id: str) -> Iterator[None]:
    """Turn pyusb exceptions raised inside the block into ClearCardError."""
    try:
        yield
    except usb.core.USBError as exc:
        raise usb_error(exc, device_id) from exc
