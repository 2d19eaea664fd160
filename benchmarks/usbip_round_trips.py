"""Round trips/s through the USB/IP transport on loopback (docs/performance.md, "Gateway").

Usage: .venv/bin/python benchmarks/usbip_round_trips.py [--seconds 3]

One emulated ukey (latency 0) exported by `UsbipServer`, reached through `UsbipBackend`:
- control round trips: GET_STATUS on endpoint 0, one URB each (nothing cached);
- driver commands: INFO through the reference driver, a bulk OUT and a bulk IN URB each;
each with TCP_NODELAY on the client socket, then without it.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import usb.core
import usb.util

from device_gateway.drivers import UKeyDriver
from device_gateway.emulator import EmulatedBackend, EmulatorStore
from device_gateway.emulator.usbip_server import UsbipServer
from device_gateway.protocol.usb_ids import PRODUCT_IDS, VENDOR_ID
from device_gateway.transports.usbip import UsbipBackend
from shared.fleet import parse_fleet

DEVICE = "661500000001"
FLEET = f'''
[[device]]
id = "{DEVICE}"
family = "ukey"
taxpayer_id = "91420100MA4K0001XR"
branch = "bench"
pin = "12345678"
period = "2026-10"
invoice_types = ["004"]
invoices_per_type = 5
'''


def _rate(seconds: float, once: Callable[[], object]) -> float:
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        once()
        count += 1
    return count / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fleet = parse_fleet(FLEET.replace("91420100MA4K0001XR", _taxpayer()))
        store = EmulatorStore(Path(tmp) / "emulator")
        states = store.seed(fleet, datetime.now(UTC))
        with UsbipServer(EmulatedBackend(store, [states[DEVICE]])) as server:
            for nodelay in (True, False):
                backend = UsbipBackend([server.address], nodelay=nodelay)
                dev = usb.core.find(backend=backend, idVendor=VENDOR_ID, idProduct=PRODUCT_IDS["ukey"])
                control = _rate(args.seconds, functools.partial(dev.ctrl_transfer, 0x80, 0x00, 0, 0, 2))
                usb.util.dispose_resources(dev)
                driver = UKeyDriver(backend, DEVICE)
                driver.open()
                commands = _rate(args.seconds, driver.info)
                driver.close()
                backend.close()
                label = "TCP_NODELAY" if nodelay else "no TCP_NODELAY"
                print(f"{label:>15}: {control:8.0f} control round trips/s, {commands:8.0f} INFO commands/s "
                      f"({2 * commands:.0f} bulk round trips/s)")


def _taxpayer() -> str:
    from shared.messages.base import taxpayer_check_char

    return "91420100MA4K0001X" + taxpayer_check_char("91420100MA4K0001X")


if __name__ == "__main__":
    main()
