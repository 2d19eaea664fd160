"""The USB/IP operation phase on the wire (usbip_common.h), for both ends: one definition.

The host side (`UsbipBackend`) and the emulated cabinet (`device_gateway/emulator/usbip_server.py`)
both speak it: an 8-byte header (version, operation code, status word), then the device list
or the import of one device by its 32-byte bus id. The URB phase is the `usbip` package's
(`usbip.protocol`: read_cmd, write_ret, client_submit); its host side has no status word for
"busy" on import, which the gateway needs, so the import is written here.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterable
from typing import Any

from usbip import protocol  # type: ignore[import-untyped]

# OP_REP_IMPORT status words (usbip_common.h)
ST_OK, ST_NA, ST_DEV_BUSY, ST_DEV_ERR, ST_NODEV, ST_ERROR = 0, 1, 2, 3, 4, 5
HEADER = struct.Struct(">HHI")  # version, operation code, status
BUSID_LEN = 32
USB_DEVICE_LEN = struct.calcsize(">256s32sIIIHHHBBBBBB")  # struct usbip_usb_device
# what a failed URB carries back (a negative Linux errno), by the errno the device raised
_URB_STATUS = {errno.EBUSY: -errno.EBUSY, errno.EPIPE: -errno.EPIPE}
URB_PROTOCOL_ERROR = -errno.EPROTO


def recv_exact(sock: socket.socket, size: int, peer: str) -> bytes:
    """Exactly `size` bytes; ConnectionResetError if `peer` closes the connection first."""
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionResetError(f"the {peer} closed the connection")
        buf += chunk
    return bytes(buf)


def header(code: int, status: int = 0) -> bytes:
    return HEADER.pack(protocol.VERSION, code, status)


def read_header(sock: socket.socket, peer: str) -> tuple[int, int]:
    """The next operation header: (operation code, status word)."""
    _version, code, status = HEADER.unpack(recv_exact(sock, HEADER.size, peer))
    return code, status


# --- host side -----------------------------------------------------------------------------


def list_devices(sock: socket.socket) -> list[dict[str, Any]]:
    """What the server exports (`usbip list -r`), as `usbip.protocol.parse_usb_device` dicts."""
    return list(protocol.client_devlist(sock))


def request_import(sock: socket.socket, busid: str) -> tuple[int, dict[str, Any] | None]:
    """Import one device: (status word, the device as parse_usb_device reads it, if ST_OK)."""
    sock.sendall(header(protocol.OP_REQ_IMPORT) + busid.encode().ljust(BUSID_LEN, b"\0"))
    _code, status = read_header(sock, "USB/IP server")
    if status != ST_OK:
        return status, None
    return status, protocol.parse_usb_device(recv_exact(sock, USB_DEVICE_LEN, "USB/IP server"))


# --- server side ---------------------------------------------------------------------------


def read_busid(sock: socket.socket) -> str:
    """The bus id an OP_REQ_IMPORT names (after its header)."""
    return recv_exact(sock, BUSID_LEN, "host").split(b"\0")[0].decode(errors="replace")


def devlist_reply(devices: Iterable[Any]) -> bytes:
    """OP_REP_DEVLIST for `usbip.device.USBDevice`s: each device, then its interfaces' triples."""
    exported = list(devices)
    reply = header(protocol.OP_REP_DEVLIST) + struct.pack(">I", len(exported))
    for device in exported:
        reply += protocol.pack_usb_device(device)
        for triple in device.interface_triples():
            reply += struct.pack(">BBBB", *triple, 0)
    return reply


def import_reply(status: int, device: Any = None) -> bytes:
    """OP_REP_IMPORT: the status word, and the device when it is ST_OK."""
    reply = header(protocol.OP_REP_IMPORT, status)
    return reply + protocol.pack_usb_device(device) if status == ST_OK else reply


def urb_status(device_errno: int | None) -> int:
    """A failed URB's status for the errno the device raised (EPROTO for anything else)."""
    return _URB_STATUS.get(device_errno or 0, URB_PROTOCOL_ERROR)
