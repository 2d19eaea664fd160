"""One gateway, 1,000 emulated devices: devices run in parallel, one device's commands never interleave."""

from __future__ import annotations

import itertools
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from gateway_helpers import device_toml, fleet_toml, settings_for

from device_gateway.emulator.backend import EmulatedBackend
from device_gateway.service import run_gateway
from shared.bus.memory import MemoryBus
from shared.bus.rpc import RpcClient
from shared.bus.topology import COMMANDS, gateway_routing_key
from shared.db import Database
from shared.messages.device import Challenge, DeviceCommand, DeviceInfo

DEVICES = 1000
COMMANDS_PER_DEVICE = 3
LATENCY_MS = 5


class Exchanges:
    """Per device: the [write, last read] interval of every request/answer exchange on the wire."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: dict[str, float] = {}
        self.spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.interleaved: list[str] = []
        self.active = 0
        self.max_active = 0

    def started(self, device_id: str) -> None:
        with self.lock:
            if device_id in self.open:
                self.interleaved.append(device_id)  # a second request before the first answer
            self.open[device_id] = time.monotonic()
            self.active += 1
            self.max_active = max(self.max_active, self.active)

    def answered(self, device_id: str) -> None:
        with self.lock:
            start = self.open.pop(device_id, None)
            if start is not None:
                self.active -= 1
                self.spans[device_id].append((start, time.monotonic()))


@pytest.fixture
def exchanges(monkeypatch: pytest.MonkeyPatch) -> Exchanges:
    seen = Exchanges()
    write: Callable[..., int] = EmulatedBackend.bulk_write
    read: Callable[..., int] = EmulatedBackend.bulk_read

    def bulk_write(self: EmulatedBackend, handle: Any, *args: Any) -> int:
        seen.started(handle.ref.device_id)
        return write(self, handle, *args)

    def bulk_read(self: EmulatedBackend, handle: Any, *args: Any) -> int:
        count = read(self, handle, *args)
        if not handle.pending:  # the whole answer has been read
            seen.answered(handle.ref.device_id)
        return count

    monkeypatch.setattr(EmulatedBackend, "bulk_write", bulk_write)
    monkeypatch.setattr(EmulatedBackend, "bulk_read", bulk_read)
    return seen


async def test_thousand_devices_in_parallel_each_in_order(
    database: Database, tmp_path: Path, exchanges: Exchanges,
) -> None:
    ids = [f"66{index:010d}" for index in range(1, DEVICES + 1)]
    fleet = fleet_toml(*(device_toml(d, latency_ms=LATENCY_MS, invoices_per_type=1) for d in ids))
    bus = MemoryBus()
    settings = settings_for(tmp_path, fleet)
    answers: dict[str, list[str]] = defaultdict(list)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            await nursery.start(lambda task_status: run_gateway(bus, database, settings,
                                                                scan_interval=3600,
                                                                task_status=task_status))
        exchanges.spans.clear()
        exchanges.max_active = 0
        started = time.monotonic()
        async with RpcClient.open(bus, "test") as rpc:

            async def command(device_id: str, op: str, reply: type[Any]) -> None:
                result = await rpc.call(COMMANDS, gateway_routing_key("default", op),
                                        DeviceCommand(device_id=device_id), reply)
                answers[device_id].append(op if op == "info" else f"{op}:{result.challenge[:4]}")

            with trio.fail_after(60):
                async with trio.open_nursery() as clients:
                    # all commands of all devices at once: each device's three overlap in time too
                    for device_id in ids:
                        clients.start_soon(command, device_id, "info", DeviceInfo)
                        clients.start_soon(command, device_id, "challenge", Challenge)
                        clients.start_soon(command, device_id, "info", DeviceInfo)
        elapsed = time.monotonic() - started
        nursery.cancel_scope.cancel()

    assert exchanges.interleaved == []
    assert all(len(answers[d]) == COMMANDS_PER_DEVICE for d in ids)
    for device_id in ids:
        spans = sorted(exchanges.spans[device_id])
        assert len(spans) == COMMANDS_PER_DEVICE
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
    # the devices did run side by side: many exchanges were on the wire at the same moment
    assert exchanges.max_active >= 16, exchanges.max_active
    serial = DEVICES * COMMANDS_PER_DEVICE * LATENCY_MS / 1000
    print(f"{DEVICES * COMMANDS_PER_DEVICE} commands in {elapsed:.2f} s "
          f"({DEVICES * COMMANDS_PER_DEVICE / elapsed:.0f}/s; one device at a time would need "
          f"{serial:.0f} s of device latency alone); max {exchanges.max_active} devices at once")
