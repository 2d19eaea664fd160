"""A USB/IP server exporting emulated devices: for tests and for emulated USB-sharing cabinets.

Each emulated device becomes a `usbip.device.USBDevice` (the reference protocol's identity:
vendor-specific interface 0, bulk OUT 0x01 and bulk IN 0x81, 512-byte packets, high speed,
serial string = device id) served over TCP with the `usbip` package's wire protocol. The
device logic is the emulator's own (`EmulatedBackend`: firmware, state files, plug and held
markers, latency): a bulk OUT is written to an emulator handle, and its answer is queued on
bulk IN when the device's `latency_ms` has passed.

USB/IP behaviour reproduced: the device list names only plugged devices; import is exclusive
(a second importer is refused busy, `ST_DEV_BUSY`, as is a device held by another program);
an unplugged device drops its connection (the host sees ENODEV). The listener is our own
(bound to a free port, one per server) because `usbip`'s TCP listener is shared process-wide
by address, does not report an ephemeral port and exports at most 16 devices.

    with UsbipServer(backend) as server:   # 127.0.0.1, free port
        spec = server.spec                  # "127.0.0.1:PORT" for CLEARCARD_USBIP_SERVERS

Run a cabinet: `python -m device_gateway.emulator.usbip_server --fleet fleet.toml
--data-dir DIR [--host 127.0.0.1] [--port 3240]`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import heapq
import itertools
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
import usb.core
from usbip import core as usbip_core  # type: ignore[import-untyped]
from usbip import protocol
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

log = structlog.get_logger("clearcard.emulator")

ST_OK, ST_DEV_BUSY, ST_NODEV = 0, 2, 4
IMPORT_GRACE_S = 1.0  # a host re-importing right after closing waits this long for its old connection
_URB_EPIPE, _URB_EBUSY, _URB_EPROTO = -errno.EPIPE, -errno.EBUSY, -errno.EPROTO


class _Gone(Exception):
    """The emulated device was unplugged: drop the connection, as usbipd does on removal."""


class _ReferenceInterface(Interface):
    """Interface 0 of a reference device: vendor class, bulk OUT 0x01 then bulk IN 0x81."""

    bInterfaceClass = 0xFF
    out_ep = Out(EP_OUT, "bulk", mps=MAX_PACKET)
    in_ep = In(EP_IN & 0x0F, "bulk", mps=MAX_PACKET)

    def __init__(self, export: _Export) -> None:
        super().__init__()
        self.export = export

    def on_out(self, ep: Any, data: bytes) -> None:
        self.export.on_out(bytes(data))

    def on_reset(self) -> None:
        self.export.on_reset()


@dataclass(eq=False)
class _Export:
    """One emulated device as the server exports it."""

    server: UsbipServer
    ref: DeviceRef
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

    @property
    def backend(self) -> EmulatedBackend:
        return self.server.backend

    def attach(self) -> int:
        """Import by a new connection: OK, busy (imported or held) or no such device."""
        deadline = time.monotonic() + IMPORT_GRACE_S
        with self.cond:
            # a host that just dropped its connection (after a timeout) imports again at once
            while self.handle is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return ST_DEV_BUSY
                self.cond.wait(remaining)
            try:
                handle = self.backend.open_device(self.ref)
            except usb.core.USBError:
                return ST_NODEV
            try:
                self.backend.claim_interface(handle, INTERFACE)
            except usb.core.USBError as exc:
                self.backend.close_device(handle)
                return ST_DEV_BUSY if exc.errno == errno.EBUSY else ST_NODEV
            self.handle = handle
        self.usb.reset_io()  # a fresh import sees a bus reset: nothing left over on the pipes
        return ST_OK

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
            raise _Gone
        try:
            self.backend.bulk_write(handle, EP_OUT, INTERFACE, data, 0)
            answer, ready_at = self.backend.take_response(handle)
        except usb.core.USBError as exc:
            if exc.errno == errno.ENODEV:
                raise _Gone from None
            raise
        if answer:
            self.server.deliver(self, self.epoch, ready_at, answer)

    def write_answer(self, epoch: int, data: bytes) -> None:
        if epoch == self.epoch:
            self.interface.in_ep.write(data)


class UsbipServer:
    """Emulated devices exported over USB/IP on one TCP port (threads; a context manager)."""

    def __init__(self, backend: EmulatedBackend, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.backend = backend
        self._exports = {ref.device_id: _Export(self, ref) for ref in backend.device_refs()}
        self._by_busid = {e.usb.busid: e for e in self._exports.values()}
        self._listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(64)
        self.host, self.port = host, self._listener.getsockname()[1]
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._running = threading.Event()  # cleared while frozen
        self._running.set()
        self._due: list[tuple[float, int, _Export, int, bytes]] = []  # answers waiting for their latency
        self._due_cond = threading.Condition()
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._started = False

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def spec(self) -> str:
        """`host:port` as CLEARCARD_USBIP_SERVERS takes it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self) -> UsbipServer:
        if not self._started:
            self._started = True
            for target in (self._accept_loop, self._delivery_loop):
                thread = threading.Thread(target=target, name=f"usbip-server-{self.port}", daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def __enter__(self) -> UsbipServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening and drop every connection (hosts see their devices vanish)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns = list(self._conns)
        self._running.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        self._listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        with self._due_cond:
            self._due_cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """A stalled server: connections stay open, requests get no answer until the block ends."""
        self._running.clear()
        try:
            yield
        finally:
            self._running.set()

    # --- answers after the device's latency --------------------------------------------------

    def deliver(self, export: _Export, epoch: int, ready_at: float, data: bytes) -> None:
        if ready_at <= time.monotonic():
            export.write_answer(epoch, data)
            return
        with self._due_cond:
            heapq.heappush(self._due, (ready_at, next(self._seq), export, epoch, data))
            self._due_cond.notify()

    def _delivery_loop(self) -> None:
        while True:
            with self._due_cond:
                if self._closed:
                    return
                if not self._due:
                    self._due_cond.wait()
                    continue
                wait = self._due[0][0] - time.monotonic()
                if wait > 0:
                    self._due_cond.wait(wait)
                    continue
                _, _, export, epoch, data = heapq.heappop(self._due)
            try:
                export.write_answer(epoch, data)
            except Exception as exc:  # never let a thread die with a traceback
                log.error("USB/IP answer not delivered", device_id=export.ref.device_id, error=repr(exc))

    # --- connections --------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self._conns.add(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), name=f"usbip-conn-{self.port}",
                                      daemon=True)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        export: _Export | None = None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            export = self._handshake(sock)
            if export is not None:
                self._urb_loop(sock, export)
        except (OSError, _Gone):
            pass
        except Exception as exc:  # never let a thread die with a traceback
            log.error("USB/IP connection failed", error=repr(exc))
        finally:
            if export is not None:
                export.detach()
            with self._lock:
                self._conns.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()

    def _plugged(self) -> list[_Export]:
        return [e for e in self._exports.values() if self.backend.store.is_plugged(e.ref.device_id)]

    def _handshake(self, sock: socket.socket) -> _Export | None:
        header = _recv_exact(sock, 8)
        _version, code, _status = struct.unpack(">HHI", header)
        if code == protocol.OP_REQ_DEVLIST:
            plugged = self._plugged()
            reply = struct.pack(">HHI", protocol.VERSION, protocol.OP_REP_DEVLIST, 0)
            reply += struct.pack(">I", len(plugged))
            for export in plugged:
                reply += protocol.pack_usb_device(export.usb)
                for triple in export.usb.interface_triples():
                    reply += struct.pack(">BBBB", *triple, 0)
            sock.sendall(reply)
            return None
        if code != protocol.OP_REQ_IMPORT:
            return None
        busid = _recv_exact(sock, 32).split(b"\0")[0].decode(errors="replace")
        wanted = self._by_busid.get(busid)
        status = ST_NODEV if wanted is None or not self.backend.store.is_plugged(wanted.ref.device_id) \
            else wanted.attach()
        if status != ST_OK or wanted is None:
            sock.sendall(struct.pack(">HHI", protocol.VERSION, protocol.OP_REP_IMPORT, status))
            return None
        export = wanted
        try:
            sock.sendall(struct.pack(">HHI", protocol.VERSION, protocol.OP_REP_IMPORT, ST_OK)
                         + protocol.pack_usb_device(export.usb))
        except OSError:
            export.detach()
            raise
        return export

    def _urb_loop(self, sock: socket.socket, export: _Export) -> None:
        write_lock = threading.Lock()

        def respond(urb: Any) -> None:  # also called from the delivery thread (parked IN URBs)
            with write_lock, contextlib.suppress(OSError):
                protocol.write_ret(sock, urb)

        device_id = export.ref.device_id
        while True:
            urb = protocol.read_cmd(sock, export.usb)
            if urb is None:
                return
            self._running.wait()
            if self._closed:
                return
            if urb.command == protocol.CMD_UNLINK:
                export.usb.cancel_urb(urb.flags)
                with write_lock, contextlib.suppress(OSError):
                    protocol.write_ret_unlink(sock, urb)
                continue
            if not self.backend.store.is_plugged(device_id):
                raise _Gone
            try:
                done = export.usb.handle_urb(urb, respond)
            except usb.core.USBError as exc:
                urb.buffer, urb.actual = b"", 0
                urb.status = {errno.EBUSY: _URB_EBUSY, errno.EPIPE: _URB_EPIPE}.get(exc.errno or 0, _URB_EPROTO)
                done = urb
            if done is not None:
                respond(done)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionResetError("the host closed the connection")
        buf += chunk
    return bytes(buf)


def main(argv: list[str] | None = None) -> None:
    """Serve a fleet file's emulated devices over USB/IP until interrupted (an emulated cabinet)."""
    from device_gateway.emulator.store import EmulatorStore
    from shared.config import Settings
    from shared.fleet import load_fleet

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--fleet", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True, help="the cabinet's data dir (state files)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3240)
    args = parser.parse_args(argv)
    fleet = load_fleet(args.fleet)
    calendar = Settings.from_env().calendar  # CLEARCARD_TAX_CALENDAR, as the product reads it
    store = EmulatorStore(args.data_dir / "emulator")
    states = store.seed(fleet, datetime.now(UTC), calendar)
    backend = EmulatedBackend(store, [states[d.id] for d in fleet.devices], calendar=calendar)
    with UsbipServer(backend, host=args.host, port=args.port) as server:
        print(f"exporting {len(fleet.devices)} emulated devices on {server.spec}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
