"""Where each device was last seen on a backend, so opening one device does not search them all.

Finding a device by serial number means reading the serial string of every candidate (two
control transfers each); with many devices on one gateway, every open would cost a pass over
the whole bus (1,000 devices: ~500 string reads per open, O(n^2) at start). Enumeration
remembers each serial's pyusb device here; a driver opens the remembered one and checks its
serial, and searches only when that fails. Drivers keep their plug-in constructor
`(backend, device_id)`, so the memory is keyed by the backend object (weakly: it goes with it).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Any

Place = tuple[int, int, int, int]  # (bus, address, vendor id, product id) of a plugged-in device
_lock = threading.Lock()
_seen: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
# the serial read at each place at the last scan: the scan reads a serial once per plug-in
_serials: weakref.WeakKeyDictionary[Any, dict[Place, str]] = weakref.WeakKeyDictionary()


def remember(backend: Any, serial: str, device: Any) -> None:
    """Note the pyusb device that answered with `serial` on `backend`."""
    # a backend that cannot be weakly referenced is searched every time
    with _lock, contextlib.suppress(TypeError):
        _seen.setdefault(backend, {})[serial] = device


def take(backend: Any, serial: str) -> Any | None:
    """The pyusb device last seen with `serial` on `backend`, if any (may be stale).

    Taken, not shared: a second opener of the same serial searches and gets its own handle,
    so the device can still refuse it as busy.
    """
    with _lock:
        try:
            return _seen.get(backend, {}).pop(serial, None)
        except TypeError:
            return None



def serials_by_place(backend: Any) -> dict[Place, str]:
    """The serials the last scan of `backend` read, by place (a copy; empty if none)."""
    with _lock, contextlib.suppress(TypeError):
        return dict(_serials.get(backend, {}))
    return {}


def keep_serials(backend: Any, serials: dict[Place, str]) -> None:
    """What this scan saw, replacing the last (a backend that cannot be weakly referenced keeps nothing)."""
    with _lock, contextlib.suppress(TypeError):
        _serials[backend] = dict(serials)
