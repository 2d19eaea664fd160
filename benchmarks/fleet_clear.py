"""Fleet clear through the scheduler: N emulated zero-latency devices across B branches.

Runs every service in this process on the in-memory bus and a fresh database on the local
PostgreSQL (CLEARCARD_TEST_DATABASE_URL or postgresql://postgres@127.0.0.1:5432/postgres),
lets the coordinator's scheduler open the window, and waits until every device is cleared.
Reports total time, clears/s and coordinator memory per in-flight clear (tracemalloc peak
while clears run, divided by the peak number of device clears in flight).

    .venv/bin/python benchmarks/fleet_clear.py --devices 10000 --branches 500 --no-tracemalloc
    .venv/bin/python benchmarks/fleet_clear.py --devices 500 --branches 25      # tracemalloc
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime
from pathlib import Path

import trio
import trio_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clearcard.runtime import start_services
from services.coordinator.clock import Clock
from services.coordinator.config import CoordinatorConfig
from services.coordinator.ports import Ports
from services.coordinator.runner import Runner
from services.coordinator.scheduler import Scheduler
from shared.bus.memory import MemoryBus
from shared.config import Settings
from shared.db import Database
from shared.db.migrate import migrate
from shared.messages.base import taxpayer_check_char
from tests.support.servers import PG_ADMIN_DSN, fresh_database

ADMIN = PG_ADMIN_DSN  # CLEARCARD_TEST_DATABASE_URL, as the tests read it
CLOCK = "2026-11-03T09:00:00+08:00"


def fleet(path: Path, devices: int, branches: int) -> None:
    prefix = "91420100MA4K0001X"
    taxpayer = prefix + taxpayer_check_char(prefix)
    lines = [f'clock = "{CLOCK}"\n']
    for i in range(devices):
        lines.append(
            f'[[device]]\nid = "{660000000000 + i}"\nfamily = "ukey"\ntaxpayer_id = "{taxpayer}"\n'
            f'branch = "branch-{i % branches:04d}"\nmachine_no = {i // branches}\npin = "12345678"\n'
            f'period = "2026-10"\ninvoice_types = ["004", "007"]\ninvoices_per_type = 2\nlatency_ms = 0\n')
    path.write_text("\n".join(lines), encoding="utf-8")


async def main(devices: int, branches: int, *, trace_memory: bool = True) -> None:
    async with fresh_database(ADMIN, prefix="cc_bench") as dsn:
        with tempfile.TemporaryDirectory() as tmp:
            fleet(Path(tmp) / "fleet.toml", devices, branches)
            settings = Settings.from_env({"CLEARCARD_DATA_DIR": tmp, "CLEARCARD_FLEET": f"{tmp}/fleet.toml",
                                          "CLEARCARD_DATABASE_URL": dsn, "CLEARCARD_BACKUP_SCHEDULE": "off"})
            async with Database.open(dsn, max_size=20) as db:
                await migrate(db)
                bus = MemoryBus()
                async with trio.open_nursery() as nursery:
                    names = ["audit", "authority-sim", "gateway", "backup", "auth", "coordinator"]
                    await start_services(nursery, names, bus, db, settings)
                    config = CoordinatorConfig()
                    scheduler = Scheduler(db, Runner(bus, db, Ports(rpc=None), config),  # type: ignore[arg-type]
                                          Clock(datetime.fromisoformat(CLOCK)), config)
                    if trace_memory:
                        tracemalloc.start()
                    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
                    started = time.perf_counter()
                    print(await scheduler.tick(), file=sys.stderr)
                    peak_in_flight = 0
                    while True:
                        rows = await db.fetch(
                            "SELECT count(*) FILTER (WHERE outcome IS NULL) AS open,"
                            " count(*) FILTER (WHERE outcome = 'cleared') AS cleared,"
                            " count(*) FILTER (WHERE lease_owner IS NOT NULL) AS leased FROM device_clears")
                        peak_in_flight = max(peak_in_flight, rows[0]["leased"])
                        if rows[0]["open"] == 0 and rows[0]["cleared"] + 0 > 0:
                            break
                        await trio.sleep(0.5)  # a benchmark's progress poll
                    elapsed = time.perf_counter() - started
                    if trace_memory:
                        _, peak = tracemalloc.get_traced_memory()
                        tracemalloc.stop()
                    else:  # RSS growth: cheap enough for 10,000 devices, an upper bound as well
                        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1024
                    failed = await db.fetch("SELECT error_code, count(*) FROM device_clears"
                                            " WHERE outcome <> 'cleared' GROUP BY 1")
                    print(f"devices={devices} branches={branches} cleared={rows[0]['cleared']} "
                          f"failed={[tuple(r) for r in failed]} total={elapsed:.1f}s "
                          f"clears/s={rows[0]['cleared'] / elapsed:.1f} in_flight_peak={peak_in_flight} "
                          f"process_peak_{'traced' if trace_memory else 'rss_growth'}={peak / 2**20:.1f}MiB "
                          f"per_in_flight={peak / max(peak_in_flight, 1) / 1024:.1f}KiB (upper bound: whole process)")
                    nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--branches", type=int, default=500)
    parser.add_argument("--no-tracemalloc", action="store_true",
                        help="measure memory as RSS growth instead (tracemalloc slows a 10,000-device run a lot)")
    args = parser.parse_args()

    from shared import logs

    logs.configure(level="WARNING")  # per-backup info lines would be measured too

    async def run() -> None:
        async with trio_asyncio.open_loop():
            await main(args.devices, args.branches, trace_memory=not args.no_tracemalloc)

    trio.run(run)
