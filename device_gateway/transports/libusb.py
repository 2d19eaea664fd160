"""The host's own USB buses, through libusb-1.0 (pyusb's `usb.backend.libusb1`): real devices.

Used when no fleet file is configured. The library is found the way pyusb finds it (the
system's library search: `ldconfig`, `LD_LIBRARY_PATH`, ...) unless `CLEARCARD_LIBUSB` names the
file. A host without it gets one ConfigurationError naming what is missing and how to install
it, never a traceback; the gateway does not start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import usb.backend.libusb1
import usb.libloader

from shared.errors import ConfigurationError

ENV_LIBUSB = "CLEARCARD_LIBUSB"
LIBRARY_NAMES = ("usb-1.0", "libusb-1.0", "usb")  # what pyusb's libusb1 backend looks for
INSTALL = ("install libusb-1.0 (Debian/Ubuntu: apt-get install libusb-1.0-0; Fedora/RHEL: dnf install "
           "libusb1; Alpine: apk add libusb; macOS: brew install libusb)")


class UsbUnavailable(ConfigurationError):
    """libusb-1.0 cannot be found or loaded on this host."""


def open_libusb(library: str | None = None) -> tuple[Any, str]:
    """(pyusb's libusb-1.0 backend, the library file or name it loaded); UsbUnavailable otherwise."""
    if library:
        if not Path(library).is_file():
            raise UsbUnavailable(
                f"{ENV_LIBUSB}={library}: there is no such file. The gateway drives the host's USB devices "
                f"through libusb-1.0: {INSTALL}, and point {ENV_LIBUSB} at the installed library "
                "(or unset it to search the system's library path).")
        found: str | None = library
    else:
        found = usb.libloader.locate_library(LIBRARY_NAMES)
        if not found:
            raise UsbUnavailable(
                "libusb-1.0 is not installed on this host: the gateway drives the host's USB devices "
                f"through it. To fix: {INSTALL}, or set {ENV_LIBUSB} to the library's path. To run on "
                "emulated devices instead, set CLEARCARD_FLEET to a fleet file.")
    backend = usb.backend.libusb1.get_backend(find_library=lambda _name: found)
    if backend is None:
        raise UsbUnavailable(
            f"{found} could not be loaded as libusb-1.0 (a different library, another architecture, or "
            f"libusb could not start on this host). To fix: {INSTALL}; set PYUSB_DEBUG=debug for pyusb's "
            "own account.")
    return backend, str(found)
