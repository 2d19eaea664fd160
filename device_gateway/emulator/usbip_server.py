"""A USB/IP server exporting emulated devices: for tests and for emulated USB-sharing cabinets.

Each emulated device becomes an `Export` (usbip_export.py: a `usbip.device.USBDevice` with the
reference protocol's identity, driven by the emulator's own logic), served over TCP: the
operation phase in the wire format the gateway's backend speaks too
(device_gateway/transports/usbip/wire.py), the URB phase with the `usbip` package. An answer is
queued on bulk IN when the device's `latency_ms` has passed.

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
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
import usb.core
from usbip import protocol  # type: ignore[import-untyped]

from device_gateway.emulator.backend import EmulatedBackend
from device_gateway.emulator.usbip_export import Export, Gone
from device_gateway.transports.usbip import wire

log = structlog.get_logger("clearcard.emulator")


class UsbipServer:
    """Emulated devices exported over USB/IP on one TCP port (threads; a context manager)."""

    def __init__(self, backend: EmulatedBackend, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.backend = backend
        self._exports = {ref.device_id: Export(backend, ref, self.deliver) for ref in backend.device_refs()}
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
        self._due: list[tuple[float, int, Export, int, bytes]] = []  # answers waiting for their latency
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

    def deliver(self, export: Export, epoch: int, ready_at: float, data: bytes) -> None:
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
        export: Export | None = None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            export = self._handshake(sock)
            if export is not None:
                self._urb_loop(sock, export)
        except (OSError, Gone):
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

    def _plugged(self) -> list[Export]:
        return [e for e in self._exports.values() if self.backend.store.is_plugged(e.ref.device_id)]

    def _handshake(self, sock: socket.socket) -> Export | None:
        code, _status = wire.read_header(sock, "host")
        if code == protocol.OP_REQ_DEVLIST:
            sock.sendall(wire.devlist_reply(e.usb for e in self._plugged()))
            return None
        if code != protocol.OP_REQ_IMPORT:
            return None
        wanted = self._by_busid.get(wire.read_busid(sock))
        status = wire.ST_NODEV if wanted is None or not self.backend.store.is_plugged(wanted.ref.device_id) \
            else wanted.attach()
        if status != wire.ST_OK or wanted is None:
            sock.sendall(wire.import_reply(status))
            return None
        try:
            sock.sendall(wire.import_reply(wire.ST_OK, wanted.usb))
        except OSError:
            wanted.detach()
            raise
        return wanted

    def _urb_loop(self, sock: socket.socket, export: Export) -> None:
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
                raise Gone
            try:
                done = export.usb.handle_urb(urb, respond)
            except usb.core.USBError as exc:
                urb.buffer, urb.actual = b"", 0
                urb.status = wire.urb_status(exc.errno)
                done = urb
            if done is not None:
                respond(done)


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
