"""What a fleet of N devices costs the status views, a /metrics scrape and the bureau watch.

Fills a fresh database on the local PostgreSQL (CLEARCARD_TEST_DATABASE_URL or
postgresql://postgres@127.0.0.1:5432/postgres) with N devices over B branches, a recorded
bureau view for each, and the metric series of P serving processes; then times `clearcard
status`'s query (every device), one uncached `/metrics` rendering, and the bureau watch's
selection of what is due. Prints the figures.

    .venv/bin/python benchmarks/operations_views.py --devices 10000 --branches 500 --processes 20
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date
from pathlib import Path

import trio
import trio_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import fresh_database
from services.console import metrics_view
from services.console.context import ConsoleContext
from services.console.events import EventHub
from services.coordinator.bureau_watch import BureauWatch
from services.coordinator.clock import Clock
from services.coordinator.config import CoordinatorConfig
from shared import metrics_store
from shared.authz.tokens import KeyRing
from shared.bus.memory import MemoryBus
from shared.china_time import CHINA
from shared.config import Settings
from shared.db import Database
from shared.db.migrate import migrate
from shared.fleet_status import device_status

PG = os.environ.get("CLEARCARD_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


async def fill(db: Database, devices: int, branches: int, processes: int) -> None:
    rows = [(f"66{n:010d}", f"branch-{n % branches:04d}", "2026-10" if n % 4 else "2026-11", date(2026, 11, 16))
            for n in range(devices)]
    views = [(d, p, "filed" if n % 3 else "not_filed", "pass" if n % 5 else "pending")
             for n, (d, _, p, _) in enumerate(rows)]

    async def unit(conn: object) -> None:
        await conn.executemany(  # type: ignore[attr-defined]
            "INSERT INTO devices (device_id, family, taxpayer_id, branch_id, gateway_id, open_period, lock_date,"
            " type_status) VALUES ($1, 'ukey', '91420100MA4K0001XK', $2, 'default', $3, $4,"
            " '{\"004\": 0, \"007\": 1}')", rows)
        await conn.executemany(  # type: ignore[attr-defined]
            "INSERT INTO bureau_views (device_id, period, filing, comparison, source)"
            " VALUES ($1, $2, $3, $4, 'refresh')", views)

    await db.run(unit)  # type: ignore[arg-type]
    series = metrics_store.samples()
    for p in range(processes):
        await db.call(metrics_store.flush, f"bench-{p}", series)


async def timed(label: str, fn: object) -> None:
    started = time.perf_counter()
    result = await fn()  # type: ignore[operator]
    size = len(result) if hasattr(result, "__len__") else ""
    print(f"{label:<48} {1000 * (time.perf_counter() - started):8.1f} ms  {size}")


async def main(args: argparse.Namespace) -> None:
    async with trio_asyncio.open_loop(), fresh_database(PG) as dsn, Database.open(dsn) as db:
        await migrate(db)
        await fill(db, args.devices, args.branches, args.processes)
        settings = Settings.from_env({"CLEARCARD_DATA_DIR": "/tmp/clearcard-bench"})
        ctx = ConsoleContext(bus=MemoryBus(), db=db, settings=settings, keys=KeyRing(settings.keys_dir),
                             hub=EventHub())
        watch = BureauWatch(db, None, Clock(), CoordinatorConfig(bureau_refresh=0))  # type: ignore[arg-type]
        today = date(2026, 11, 3)
        print(f"{args.devices} devices, {args.branches} branches, {args.processes} processes' metric series")
        for _ in range(2):
            await timed("status: every device with the bureau's view", lambda: db.run(
                device_status, today, settings.thresholds))
            await timed("/metrics: one rendering (uncached)", lambda: metrics_view.render(ctx))
            await timed("bureau watch: devices due for a refresh", lambda: db.run(
                watch._due, "2026-11"))  # the query a tick runs
        print(f"(a scrape is cached {metrics_view.CACHE_SECONDS:g} s; the watch asks "
              f"{200} devices per message; today {today}, zone {CHINA})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--branches", type=int, default=500)
    parser.add_argument("--processes", type=int, default=20)
    trio.run(main, parser.parse_args())
