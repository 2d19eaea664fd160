"""Gateway commands/s for 1 and 1,000 emulated devices, and the per-command overhead.

Usage: .venv/bin/python benchmarks/gateway_throughput.py [--database postgresql://postgres@127.0.0.1:5432/postgres]
       [--latency-ms 5] [--devices 1000] [--seconds 5]

Runs the real gateway service (`run_gateway`: fleet file, emulated pyusb backend, one actor per
device, registry in PostgreSQL) on the in-memory bus, in a fresh temporary database created on
the given server and dropped afterwards, and sends it `info` commands through the RPC client
as the coordinator does. Every `info` runs the whole path: RPC decode, actor mailbox, worker
thread, pyusb, reference-protocol frames, emulated firmware, the device's latency, and the
registry update in PostgreSQL.

- one device, one command at a time, latency 0 and `--latency-ms`: commands/s, and the
  overhead per command = mean time per command minus the emulated latency;
- `--devices` devices, latency `--latency-ms`, every device busy (one command in flight each;
  the gateway runs PREFETCH commands at once): commands/s overall.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio
import trio_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device_gateway.service import run_gateway
from shared.bus.memory import MemoryBus
from shared.bus.rpc import RpcClient
from shared.bus.topology import COMMANDS, gateway_routing_key
from shared.db import Database
from shared.db.migrate import migrate
from shared.messages.base import taxpayer_check_char
from shared.messages.device import DeviceCommand, DeviceInfo
from tests.support.fleets import device
from tests.support.fleets import fleet_text as fleet
from tests.support.servers import fresh_database
from tests.support.settings import local_settings

TAXPAYER = "91420100MA4K0001X" + taxpayer_check_char("91420100MA4K0001X")


def fleet_text(count: int, latency_ms: int) -> str:
    return fleet(*(device(f"66{index:010d}", "ukey", TAXPAYER, ["004"], branch="bench", invoices_per_type=1,
                          latency_ms=latency_ms) for index in range(1, count + 1)))


async def scenario(server: str, devices: int, latency_ms: int, seconds: float) -> tuple[int, float, list[float]]:
    """(commands, elapsed, per-command seconds of device 1) with every device kept busy."""
    async with fresh_database(server, prefix="cc_bench") as dsn:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp)
            (data / "fleet.toml").write_text(fleet_text(devices, latency_ms), encoding="utf-8")
            settings = local_settings(data, fleet_file=data / "fleet.toml")
            async with Database.open(dsn, max_size=10) as db:
                await migrate(db)
                bus = MemoryBus()
                async with trio.open_nursery() as nursery:
                    await nursery.start(lambda task_status: run_gateway(
                        bus, db, settings, scan_interval=3600, task_status=task_status))
                    async with RpcClient.open(bus, "bench") as rpc:
                        count, durations = 0, []
                        stop = trio.current_time() + seconds

                        async def device_loop(device_id: str) -> None:
                            nonlocal count
                            while trio.current_time() < stop:
                                begin = time.perf_counter()
                                await rpc.call(COMMANDS, gateway_routing_key("default", "info"),
                                               DeviceCommand(device_id=device_id), DeviceInfo)
                                if device_id.endswith("0001"):
                                    durations.append(time.perf_counter() - begin)
                                count += 1

                        started = time.perf_counter()
                        async with trio.open_nursery() as clients:
                            for index in range(1, devices + 1):
                                clients.start_soon(device_loop, f"66{index:010d}")
                        elapsed = time.perf_counter() - started
                    nursery.cancel_scope.cancel()
    return count, elapsed, durations


async def main(args: argparse.Namespace) -> None:
    print(f"gateway `info` commands, in-memory bus, PostgreSQL registry; {args.seconds:g} s per run")
    for latency in sorted({0, args.latency_ms}):
        count, elapsed, durations = await scenario(args.database, 1, latency, args.seconds)
        mean = statistics.fmean(durations)
        print(f"  1 device, latency {latency:3d} ms: {count / elapsed:7.0f} commands/s; per command "
              f"mean {mean * 1000:6.2f} ms, p50 {statistics.median(durations) * 1000:6.2f} ms, "
              f"overhead above latency {mean * 1000 - latency:5.2f} ms")
    count, elapsed, durations = await scenario(args.database, args.devices, args.latency_ms, args.seconds)
    print(f"  {args.devices} devices, latency {args.latency_ms:3d} ms: {count / elapsed:7.0f} commands/s "
          f"({count} commands in {elapsed:.1f} s); one device's command took "
          f"{statistics.fmean(durations) * 1000:.1f} ms on average while all were busy")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="PostgreSQL server (admin DSN) to create the temporary database on")
    parser.add_argument("--latency-ms", type=int, default=5)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    arguments = parser.parse_args()

    async def run() -> None:
        async with trio_asyncio.open_loop():
            await main(arguments)

    trio.run(run)
