"""Failures as libusb reports them, for every transport that is not libusb itself (the emulated
backend, USB/IP), so drivers handle an emulated or a cabinet's device as a local one.

pyusb's `USBError` carries libusb's code (`backend_error_code`) and an errno; the drivers'
error translation (device_gateway/drivers/errors.py) reads both.
"""

from __future__ import annotations

import errno

import usb.core

LIBUSB_ERROR_IO = -1
LIBUSB_ERROR_INVALID_PARAM = -2
LIBUSB_ERROR_NO_DEVICE = -4
LIBUSB_ERROR_BUSY = -6
LIBUSB_ERROR_TIMEOUT = -7
LIBUSB_ERROR_PIPE = -9


def no_device(what: str) -> usb.core.USBError:
    return usb.core.USBError(f"No such device (it may have been disconnected): {what}",
                             LIBUSB_ERROR_NO_DEVICE, errno.ENODEV)


def timed_out(what: str) -> usb.core.USBTimeoutError:
    return usb.core.USBTimeoutError(f"Operation timed out: {what}", LIBUSB_ERROR_TIMEOUT, errno.ETIMEDOUT)


def stall(what: str) -> usb.core.USBError:
    return usb.core.USBError(f"Pipe error: {what}", LIBUSB_ERROR_PIPE, errno.EPIPE)


def busy(what: str) -> usb.core.USBError:
    return usb.core.USBError(f"Resource busy: {what}", LIBUSB_ERROR_BUSY, errno.EBUSY)


def io_error(what: str) -> usb.core.USBError:
    return usb.core.USBError(what, LIBUSB_ERROR_IO, errno.EIO)


def closed_handle() -> usb.core.USBError:
    return usb.core.USBError("Invalid handle (closed)", LIBUSB_ERROR_INVALID_PARAM, errno.EINVAL)


def urb_error(status: int, what: str) -> usb.core.USBError:
    """A failed URB's status (a negative Linux errno) as libusb reports it."""
    number = -status
    if number == errno.EPIPE:
        return stall(what)
    if number in (errno.ENODEV, errno.ESHUTDOWN, errno.ENOENT):
        return no_device(what)
    if number == errno.ETIMEDOUT:
        return timed_out(what)
    if number == errno.EBUSY:
        return busy(what)
    return usb.core.USBError(f"Input/Output Error: {what} (URB status {status})", LIBUSB_ERROR_IO, errno.EIO)
